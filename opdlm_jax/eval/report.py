"""Summaries of per-example benchmark records and the paper-style table.

accuracy: correct responses / scorable responses, over every (row, response) pair, as the
reference's rl_reward.py computes it (unscorable rows, e.g. chat or code without tests, are left
out). tokens_per_round: the mean over responses of generated tokens / denoising rounds (the
reference's "avg tok/step"); null for AR decoding and for scored-only completions.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from opdlm_jax.checkpoints.paths import atomic_write_text


def summarize(records: Iterable[Mapping[str, Any]], settings: Mapping[str, Any]) -> dict:
    records = list(records)
    scored = [r for r in records if r.get("scorable")]
    correct = sum(bool(r.get("correct")) for r in scored)
    ratios = [r["tokens"] / r["rounds"] for r in records if r.get("rounds") and r.get("tokens") is not None]
    diffusion = settings.get("mode") == "diffusion"
    tokens = [r["tokens"] for r in records if r.get("tokens") is not None]
    by_domain: dict[str, list[int]] = {}
    for r in scored:
        by_domain.setdefault(r["domain"], [0, 0])
        by_domain[r["domain"]][0] += bool(r.get("correct"))
        by_domain[r["domain"]][1] += 1
    out = {
        "accuracy": correct / len(scored) if scored else None,
        "n": len(scored),
        "correct": correct,
        "rows": len({r["index"] for r in records}),
        "responses": len(records),
        "unscorable": len(records) - len(scored),
        "truncated": sum(bool(r.get("truncated")) for r in records),
        "tokens_per_round": sum(ratios) / len(ratios) if diffusion and ratios else None,
        "mean_tokens": sum(tokens) / len(tokens) if tokens else None,
    }
    if len(by_domain) > 1:
        out["accuracy_by_domain"] = {d: c / n for d, (c, n) in sorted(by_domain.items())}
    out.update({k: v for k, v in settings.items() if k not in out})
    return out


def merge_results(path: str | os.PathLike, new: Mapping[str, dict]) -> dict:
    """results.json with `new` benchmarks added or replaced (others kept); written atomically."""
    path = Path(path)
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    results.update(new)
    atomic_write_text(path, json.dumps(results, indent=1, sort_keys=True) + "\n")
    return results


def _cell(summary: Optional[Mapping[str, Any]]) -> str:
    if summary is None:
        return "-"
    acc = summary.get("accuracy")
    text = "n/a" if acc is None else f"{100 * acc:.1f}"
    tpr = summary.get("tokens_per_round")
    return text + (f" ({tpr:.2f})" if tpr is not None else "")


def markdown_table(columns: Mapping[str, Mapping[str, dict]]) -> str:
    """columns: model label -> its results.json. Rows: benchmarks (in first-seen order)."""
    models = list(columns)
    benches: list[str] = []
    for res in columns.values():
        benches += [b for b in res if b not in benches]
    lines = ["# Results", "",
             "Accuracy (%) over every (problem, response) pair; in parentheses, tokens per "
             "denoising round (diffusion decoding only). As laid out in the paper's Table 1.", "",
             "| benchmark | " + " | ".join(models) + " |",
             "|---|" + "---|" * len(models)]
    for b in benches:
        lines.append(f"| {b} | " + " | ".join(_cell(columns[m].get(b)) for m in models) + " |")
    lines += ["", "| benchmark | model | n | rows x responses | budget | decoding | truncated | unscorable |",
              "|---|---|---|---|---|---|---|---|"]
    for b in benches:
        for m in models:
            s = columns[m].get(b)
            if s is None:
                continue
            decoding = s.get("mode", "?")
            if decoding == "diffusion":
                decoding += f" {s.get('strategy')} b={s.get('block_size')}"
                if s.get("strategy") == "low_confidence_dynamic":
                    decoding += f" t={s.get('threshold')}"
            lines.append(f"| {b} | {m} | {s['n']} | {s['rows']} x {s.get('responses_per_task', '?')} | "
                         f"{s.get('max_new_tokens', '?')} | {decoding} | {s.get('truncated', 0)} | "
                         f"{s.get('unscorable', 0)} |")
    return "\n".join(lines) + "\n"


def model_label(results: Mapping[str, dict], fallback: str) -> str:
    for s in results.values():
        if s.get("model"):
            return str(s["model"])
    return fallback
