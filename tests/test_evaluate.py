"""experiments.evaluate: score-only mode on the fixtures (every row shape), resumable chunks, bad
input, and end to end on the embedded SmolLM2 (AR and the untrained block-diffusion student)
checked against the score-only mode on the same completions."""
import json
from pathlib import Path

import pytest

from experiments import evaluate
from experiments.data import demo_prompt_path
from opdlm_jax.data.prompt_records import read_prompt_records

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "opdlm_eval"


def _write_completions(path, items):
    path.write_text("".join(json.dumps(dict(index=i, completion=c, **extra)) + "\n" for i, c, extra in items))
    return path


def _score(tmp_path, name, items, *extra):
    comp = _write_completions(tmp_path / f"{name}.completions.jsonl", items)
    out = tmp_path / f"out_{name}"
    code = evaluate.main(["--score", str(comp), "--data-dir", str(FIXTURES), "--datasets", name, "--out", str(out),
                          "--no-progress", "--timeout", "5", *extra])
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    records = [json.loads(line) for line in (out / "records" / f"{name}.jsonl").read_text().splitlines()]
    return results[name], records, out


def test_score_only_math_with_the_length_rule(tmp_path):
    items = [(0, "3 + 4 = \\boxed{7}", {"tokens": 12}),
             (0, "\\boxed{8}", {"tokens": 12}),
             (1, "\\boxed{2,400}", {"tokens": 996}),  # right, but it reached the budget (1000) - 5
             (2, "half of 1 is \\boxed{0.5}", {}),
             (3, "\\boxed{-3}", {})]
    summary, records, out = _score(tmp_path, "GSM8K", items)
    assert (summary["n"], summary["correct"], summary["truncated"]) == (5, 3, 1)
    assert summary["accuracy"] == pytest.approx(0.6) and summary["tokens_per_round"] is None
    assert summary["max_new_tokens"] == 1000 and summary["rows"] == 4
    assert records[2]["detail"] == "reached the length budget" and records[2]["extracted"] == "2,400"
    table = (out / "results.md").read_text()
    assert "| GSM8K | 60.0 |" in table
    (tmp_path / "keep").mkdir()
    kept, _, _ = _score(tmp_path / "keep", "GSM8K", items, "--keep-truncated")
    assert kept["correct"] == 4


def test_score_only_multiple_choice(tmp_path):
    summary, records, _ = _score(tmp_path, "MMLU", [(0, '"answer": "B"', {}), (1, "\\boxed{C}", {}),
                                                    (2, "I am not sure", {})])
    assert (summary["correct"], summary["n"]) == (2, 3)
    assert [r["extracted"] for r in records] == ["B", "C", None]


def test_score_only_code_rows_and_an_unregistered_benchmark(tmp_path, capsys):
    block = "```python\n{}\n```"
    items = [(0, block.format("def add(a, b):\n    return a + b"), {}),
             (1, block.format("def square(x):\n    return x * x"), {}),
             (2, block.format("a, b = map(int, input().split())\nprint(a + b)"), {}),
             (3, block.format("def double(x):\n    return x * 3"), {}),  # wrong
             (4, "The answer is B.", {}),  # science row: multiple choice
             (5, "Hello!", {})]  # chat row: not scorable
    summary, records, _ = _score(tmp_path, "CodeMix", items)
    assert "CodeMix: not a registered benchmark" in capsys.readouterr().err
    assert [r["domain"] for r in records] == ["code"] * 4 + ["mc", "chat"]
    assert [r["correct"] for r in records] == [True, True, True, False, True, None]
    assert (summary["n"], summary["correct"], summary["unscorable"]) == (5, 4, 1)
    assert summary["accuracy_by_domain"] == {"code": 0.75, "mc": 1.0}
    for name, completion in (("HumanEval", "def incr(x: int) -> int:\n    return x + 1\n```"),
                             ("MBPP", "def rev(s):\n    return s[::-1]\n```"),
                             ("LiveCodeBench", block.format("a, b = map(int, input().split())\nprint(a * b)"))):
        summary, _, _ = _score(tmp_path, name, [(0, completion, {})])
        assert summary["accuracy"] == 1.0, name


def test_chunks_resume_and_settings_are_checked(tmp_path, capsys):
    items = [(i, f"\\boxed{{{a}}}", {}) for i, a in enumerate(["7", "2400", "0.5", "-3", "1"])]
    args = ["--chunk-size", "2"]
    first, _, out = _score(tmp_path, "GSM8K", items, *args)
    chunks = sorted((out / "chunks" / "GSM8K").glob("chunk_*.jsonl"))
    assert len(chunks) == 3
    stamps = {c.name: c.stat().st_mtime_ns for c in chunks}
    chunks[1].unlink()  # as if the run was preempted in its second chunk
    capsys.readouterr()
    again, _, _ = _score(tmp_path, "GSM8K", items, *args)
    assert "2 of 3 chunks already done" in capsys.readouterr().err
    assert again == first
    for c in sorted((out / "chunks" / "GSM8K").glob("chunk_*.jsonl")):
        if c.name != chunks[1].name:
            assert c.stat().st_mtime_ns == stamps[c.name]  # not redone
    comp = tmp_path / "GSM8K.completions.jsonl"
    code = evaluate.main(["--score", str(comp), "--data-dir", str(FIXTURES), "--datasets", "GSM8K",
                          "--out", str(out), "--no-progress", "--chunk-size", "2", "--max-new-tokens", "64"])
    assert code == 2 and "other settings (differing: max_new_tokens)" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--score", "C", "--datasets", "GSM8K"], "--data-dir DIR is required"),
    (["--score", "C", "--data-dir", str(FIXTURES), "--datasets", "NOPE"], "no NOPE.json in"),
    (["--score", "C", "--data-dir", "/nonexistent/dir", "--datasets", "GSM8K"], "no such directory"),
    (["--data-dir", str(FIXTURES), "--datasets", "GSM8K"], "name what to evaluate"),
    (["--score", "C", "--data-dir", str(FIXTURES), "--datasets", "GSM8K", "MMLU"], "exactly one"),
    (["--score", "C", "--data-dir", str(FIXTURES), "--datasets", "GSM8K"], "index 99 is outside"),
    (["--model", "m", "--data-dir", str(FIXTURES), "--datasets", "GSM8K", "--threshold", "2"], "outside [0, 1]"),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    argv = [str(_write_completions(tmp_path / "c.jsonl", [(99, "x", {})])) if a == "C" else a for a in argv]
    assert evaluate.main(argv + ["--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1


# ------------------------------------------------------------------ end to end on SmolLM2

# Held-out demo math prompts (positions among the math records): the AR model answers the first
# three correctly within 32 tokens on this machine, and the fourth not.
HELDOUT_MATH = (0, 7, 36, 1)


def test_smollm2_end_to_end_equals_score_only(tmp_path):
    math = [r for r in read_prompt_records(demo_prompt_path("heldout")) if r.domain == "math"]
    data = tmp_path / "data"
    data.mkdir()
    # The authors' row format; an unregistered name: the question is the prompt, domain math.
    (data / "HeldoutMath.json").write_text(json.dumps(
        [{"question": math[i].prompt, "ground_truth_answer": math[i].answer} for i in HELDOUT_MATH]))
    dataset = ["--data-dir", str(data), "--datasets", "HeldoutMath", "--max-new-tokens", "32", "--no-progress"]
    common = dataset + ["--batch-size", "4", "--responses-per-task", "2"]
    outs = {"ar": tmp_path / "ar", "diffusion": tmp_path / "student"}
    for mode, out in outs.items():
        assert evaluate.main(["--model", "smollm2-135m", "--mode", mode, "--out", str(out), *common]) == 0
        decoded = json.loads((out / "results.json").read_text())["HeldoutMath"]
        assert (decoded["n"], decoded["rows"], decoded["mode"]) == (8, 4, mode)
        assert (decoded["tokens_per_round"] is None) == (mode == "ar")
        assert "| HeldoutMath |" in (out / "results.md").read_text()
        records = (out / "records" / "HeldoutMath.jsonl").read_text().splitlines()
        assert all(json.loads(line)["tokens"] <= 32 for line in records)
        # The same completions through the score-only mode give the same verdicts.
        rescored = tmp_path / f"rescored_{mode}"
        assert evaluate.main(["--score", str(out / "records" / "HeldoutMath.jsonl"), "--out", str(rescored),
                              *dataset]) == 0
        scored = json.loads((rescored / "results.json").read_text())["HeldoutMath"]
        assert (scored["accuracy"], scored["n"], scored["correct"]) == \
               (decoded["accuracy"], decoded["n"], decoded["correct"])
        if mode == "ar":
            assert decoded["accuracy"] > 0  # the scorer sees real answers, not only failures
    assert evaluate.main(["--table", str(outs["ar"]), str(outs["diffusion"]), "--out", str(tmp_path / "t")]) == 0
    table = (tmp_path / "t" / "results.md").read_text()
    assert "| benchmark | smollm2-135m | smollm2-135m (diffusion) |" in table


def test_a_checkpoint_brings_its_block_size_alignment_and_mask(tiny_run, tmp_path):
    """--checkpoint decodes the run's student with the settings saved in its checkpoint meta."""
    meta = evaluate.run_meta(str(tiny_run), None)
    out = tmp_path / "out"
    assert evaluate.main(["--checkpoint", str(tiny_run), "--data-dir", str(FIXTURES), "--datasets", "GSM8K",
                          "--out", str(out), "--limit", "2", "--max-new-tokens", "8", "--batch-size", "2",
                          "--responses-per-task", "1", "--no-progress"]) == 0
    summary = json.loads((out / "results.json").read_text())["GSM8K"]
    assert (summary["mode"], summary["block_size"], summary["alignment"]) == \
           ("diffusion", meta["block_size"], meta["alignment"])
    assert summary["n"] == 2 and summary["tokens_per_round"] is not None
