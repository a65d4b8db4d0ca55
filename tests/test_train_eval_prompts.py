"""Training and evaluation feed the same prompt ids for the same record, under the demo's config
(which trains without suffixes) and under the recipe's math suffix."""
import types

import pytest

from experiments import evaluation
from experiments.configs.common import MATH_SUFFIX
from experiments.configs.demo import get_config
from experiments.data import ANSWER_DOMAINS, demo_prompt_path
from opdlm_jax.data.chat_format import ChatFormat, chat_format_from_config, prompt_token_ids
from opdlm_jax.data.prompt_records import read_prompt_records, write_prompt_records
from opdlm_jax.train.loop import make_data_iterator


@pytest.fixture(scope="module")
def tokenizer():
    from opdlm_jax.checkpoints.presets import smollm2_gguf_path
    from opdlm_jax.checkpoints.tokenizer import load_gguf_tokenizer

    return load_gguf_tokenizer(smollm2_gguf_path())  # the demo teacher's tokenizer


def _records():
    """Held-out records of every domain: 4 math, then 4 others."""
    heldout = read_prompt_records(demo_prompt_path("heldout"), require_answer_for=ANSWER_DOMAINS)
    return ([r for r in heldout if r.domain == "math"][:4] +
            [r for r in heldout if r.domain == "chat"][:2] +
            [r for r in heldout if r.domain == "continuation"][:2])


def _training_ids(config, tokenizer, records, tmp_path) -> dict:
    """prompt -> the ids the trainer's data iterator feeds for it."""
    config.data.train = str(write_prompt_records(records, tmp_path / "train.jsonl"))
    setup = types.SimpleNamespace(teacher=types.SimpleNamespace(tokenizer=tokenizer))
    batch = next(make_data_iterator(config, setup, tmp_path))
    return dict(zip(batch.prompts, batch.token_ids))


def _evaluation_ids(config, tokenizer, records, monkeypatch) -> dict:
    """prompt -> the ids the demo's evaluation feeds for it (the teacher's answers are stubbed)."""
    monkeypatch.setattr(evaluation, "generate_ar",
                        lambda _c, _p, ids, **kw: types.SimpleNamespace(token_ids=[[] for _ in ids]))
    teacher = types.SimpleNamespace(tokenizer=tokenizer, config=None, params=None, stop_token_ids=(),
                                    mask_token_id=None)
    evalset = evaluation.build_eval_set(teacher, records, n_math=4, n_chat=4, max_new_tokens=8,
                                        fmt=chat_format_from_config(config))
    math = [r.prompt for r in records if r.domain == "math"]
    return dict(zip(math + evalset.chat_prompts, evalset.math_ids + evalset.chat_ids))


@pytest.mark.parametrize("suffixes", [None, {"math": "\n" + MATH_SUFFIX}], ids=["demo", "math_suffix"])
def test_training_and_evaluation_feed_the_same_prompt_ids(suffixes, tokenizer, tmp_path, monkeypatch):
    config = get_config("").train  # batch of 8: the 8 records in one batch
    if suffixes is not None:
        config.data.suffixes = suffixes
    records = _records()
    train = _training_ids(config, tokenizer, records, tmp_path)
    ev = _evaluation_ids(config, tokenizer, records, monkeypatch)
    assert len(ev) == len(records)
    assert {r.domain for r in records if r.prompt in train} == {"math", "chat", "continuation"}
    for prompt, ids in train.items():
        assert ev[prompt] == ids, prompt
    # The suffix is really there (or not) on both sides.
    math = records[0]
    with_suffix = prompt_token_ids(tokenizer, math, ChatFormat(suffixes={"math": "\n" + MATH_SUFFIX}))
    plain = prompt_token_ids(tokenizer, math, ChatFormat(suffixes={}))
    assert ev[math.prompt] == (plain if suffixes is None else with_suffix)
