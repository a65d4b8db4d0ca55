"""The recipe's training prompts: the authors' `opdlm_train.json` -> `data/opdlm_prompts.jsonl`.

    huggingface-cli download divelab/opdlm_train_data --repo-type dataset --local-dir data/opdlm_train_data
    python -m experiments.data.prepare_recipe --src data/opdlm_train_data --out data/opdlm_prompts.jsonl

--src is the downloaded directory (holding opdlm_train.json) or a file: a JSON list, JSON lines or
Parquet, with the authors' fields `question` (or `prompt`), `domain` and optionally
`ground_truth_answer`. Each row becomes a trainer record `{"prompt", "domain", "answer"?}`
(`opdlm_jax.data.prompt_records`), its prompt built as the authors' training rollouts build it
(eval_utils.py, DATASET_CONFIGS["opdlm_train"]["per_domain_template"]): math gets
"\\nPlease reason step by step, and put your final answer within \\boxed{}.", science gets the
multiple-choice instruction, code and chat are used as they are. (The recipe configs' math suffix
is then already present and not added twice.) The answer is kept for math and science only.
Prints the counts per domain; the published set has 61,816 rows: math 20,222, code 21,594,
science 10,000, chat 10,000. A row without a prompt, or with a domain outside those four, is an
error naming the row.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Sequence

from opdlm_jax.cli_errors import ArgumentParser, run_cli
from opdlm_jax.data.chat_format import MATH_SUFFIX, MC_SUFFIX
from opdlm_jax.data.prompt_records import write_prompt_records
from opdlm_jax.errors import BadInput

SUFFIXES = {"math": "\n" + MATH_SUFFIX, "science": "\n" + MC_SUFFIX, "code": "", "chat": ""}
ANSWER_DOMAINS = ("math", "science")
PUBLISHED_COUNTS = {"math": 20222, "code": 21594, "science": 10000, "chat": 10000}
SOURCE_NAMES = ("opdlm_train.json", "opdlm_train.jsonl", "opdlm_train.parquet")


def source_file(src: str | Path) -> Path:
    src = Path(src)
    if src.is_dir():
        for name in SOURCE_NAMES:
            if (src / name).is_file():
                return src / name
        found = sorted(p.name for p in src.iterdir())[:20]
        raise BadInput(f"--src {src}: no {' / '.join(SOURCE_NAMES)} in it (it has: {', '.join(found) or 'nothing'})")
    if not src.is_file():
        raise BadInput(f"--src {src}: no such file or directory")
    return src


def read_rows(path: Path) -> list[Any]:
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        return pq.read_table(path).to_pylist()
    text = path.read_text(encoding="utf-8")
    try:
        rows = json.loads(text)
    except ValueError:
        rows = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError as e:
                    raise BadInput(f"{path}:{lineno}: not JSON ({e})") from None
    if isinstance(rows, dict):  # {"data": [...]} or a single row
        rows = rows.get("data", [rows])
    if not isinstance(rows, list) or not rows:
        raise BadInput(f"{path}: expected a non-empty list of rows")
    return rows


def convert(rows: Iterable[Any], where: str) -> list[dict]:
    """Authors' rows -> trainer records; BadInput naming the first bad row."""
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadInput(f"{where} row {i}: expected an object, got {type(row).__name__}")
        question = row.get("question", row.get("prompt"))
        if not isinstance(question, str) or not question.strip():
            raise BadInput(f"{where} row {i}: no prompt (field 'question' is missing or empty)")
        domain = row.get("domain")
        if domain not in SUFFIXES:
            raise BadInput(f"{where} row {i}: unknown domain {domain!r}; expected one of "
                           f"{', '.join(SUFFIXES)}")
        record = {"prompt": question + SUFFIXES[domain], "domain": domain}
        answer = row.get("ground_truth_answer", row.get("answer"))
        if domain in ANSWER_DOMAINS and isinstance(answer, (str, int, float)) and str(answer).strip():
            record["answer"] = str(answer)
        out.append(record)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = ArgumentParser(prog="python -m experiments.data.prepare_recipe", description=__doc__.split("\n\n")[0])
    p.add_argument("--src", required=True, help="opdlm_train.json, or the directory holding it")
    p.add_argument("--out", required=True, help="the trainer's prompt file (.jsonl or .parquet)")
    return p


def _main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    path = source_file(args.src)
    records = convert(read_rows(path), str(path))
    out = write_prompt_records(records, args.out)
    counts = Counter(r["domain"] for r in records)
    print(f"wrote {len(records)} prompts to {out}")
    for domain in SUFFIXES:
        expected = PUBLISHED_COUNTS[domain]
        print(f"  {domain:8s} {counts.get(domain, 0):6d}   (published set: {expected})")
    if len(records) == sum(PUBLISHED_COUNTS.values()) and counts != Counter(PUBLISHED_COUNTS):
        print("note: the total matches the published set but the domains do not", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run_cli(_main, argv)


if __name__ == "__main__":
    sys.exit(main())
