"""experiments.data.prepare_recipe: the authors' opdlm_train.json -> the trainer's prompt file."""
import json
from pathlib import Path

import pytest

from experiments.configs.common import recipe
from experiments.data import prepare_recipe
from opdlm_jax.data.chat_format import chat_format_from_config, user_content
from opdlm_jax.data.prompt_records import read_prompt_records

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "opdlm_eval"


def test_fixture_in_the_authors_format(tmp_path, capsys):
    out = tmp_path / "data" / "opdlm_prompts.jsonl"
    assert prepare_recipe.main(["--src", str(FIXTURES), "--out", str(out)]) == 0  # a directory as --src
    printed = capsys.readouterr().out
    assert "wrote 7 prompts" in printed
    for domain, n in (("math", 3), ("science", 1), ("code", 2), ("chat", 1)):
        assert any(line.split()[:2] == [domain, str(n)] for line in printed.splitlines()), printed
    records = read_prompt_records(out, allowed_domains=prepare_recipe.SUFFIXES)
    by_domain = {}
    for r in records:
        by_domain.setdefault(r.domain, []).append(r)
    assert by_domain["math"][0].prompt.endswith("put your final answer within \\boxed{}.")
    assert by_domain["math"][1].answer == "56"  # a number becomes a string
    assert by_domain["science"][0].prompt.endswith('e.g., "answer": "C".')
    assert by_domain["science"][0].answer == "A"
    assert by_domain["code"][0].prompt == "Write a function f(x) that returns x." and by_domain["code"][0].answer is None
    assert by_domain["chat"][0].prompt == "Give me a tip for sleeping well."
    # The recipe configs read this file and append the math suffix: it must not appear twice.
    fmt = chat_format_from_config(recipe("qwen3-4b"))
    assert user_content(by_domain["math"][0], fmt) == by_domain["math"][0].prompt


@pytest.mark.parametrize("rows,message", [
    ([{"question": "ok", "domain": "math"}, {"question": "x", "domain": "poetry"}],
     "row 1: unknown domain 'poetry'"),
    ([{"question": "ok", "domain": "chat"}, {"domain": "math"}], "row 1: no prompt"),
    ([{"question": "   ", "domain": "code"}], "row 0: no prompt"),
])
def test_a_bad_row_is_named(tmp_path, capsys, rows, message):
    src = tmp_path / "opdlm_train.json"
    src.write_text(json.dumps(rows))
    assert prepare_recipe.main(["--src", str(src), "--out", str(tmp_path / "out.jsonl")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and len(err.splitlines()) == 1
    assert not (tmp_path / "out.jsonl").exists()


def test_jsonl_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"question": "2+2?", "domain": "math", "ground_truth_answer": "4"},
            {"question": "Hi", "domain": "chat", "ground_truth_answer": None}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "train.parquet")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    for name in ("train.parquet", "train.jsonl"):
        out = tmp_path / f"{name}.out.jsonl"
        assert prepare_recipe.main(["--src", str(tmp_path / name), "--out", str(out)]) == 0
        assert [r.domain for r in read_prompt_records(out)] == ["math", "chat"]


def test_missing_source_is_one_line(tmp_path, capsys):
    assert prepare_recipe.main(["--src", str(tmp_path / "nope"), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert capsys.readouterr().err.startswith("error: --src")
    assert prepare_recipe.main(["--src", str(tmp_path), "--out", str(tmp_path / "o.jsonl")]) == 2
    assert "no opdlm_train.json" in capsys.readouterr().err
