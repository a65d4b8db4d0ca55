"""Prompt data: JSONL/Parquet records, tfds array_record without TensorFlow, chat formatting,
the grain iterator (determinism, checkpointing, per-host sharding), bad-data messages."""
import importlib.util
import json
import sys

import pytest
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from opdlm_jax.data import (MATH_SUFFIX, ChatFormat, PromptDataError, PromptRecord,
                            PromptTooLongError, encode_record, make_prompt_iterator,
                            read_prompt_records, user_content, validate_records,
                            write_prompt_records)

# ChatML with Qwen3's non-thinking behaviour: an empty think block when enable_thinking is False.
CHATML = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
          "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n"
          "{% if enable_thinking is defined and not enable_thinking %}<think>\n\n</think>\n\n"
          "{% endif %}{% endif %}")
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
GEN_PROMPT = "<|im_start|>assistant\n<think>\n\n</think>\n\n"
SOURCES = ["memory", "tfds"]  # what grain reads: the validated records, or the tfds dataset


@pytest.fixture(scope="module")
def tok():
    """Byte-level tokenizer (specials + 256 bytes, no merges): one token per byte."""
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(SPECIALS + alphabet)},
                                   merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS])
    return PreTrainedTokenizerFast(tokenizer_object=backend, eos_token="<|endoftext|>",
                                   chat_template=CHATML)


def make_records(n=26):
    domains = ["math", "chat", "continuation"]
    return [PromptRecord(prompt=f"q{i} " + "ab" * (i % 9), domain=domains[i % 3],
                         answer=str(i) if i % 3 == 0 else None, index=i) for i in range(n)]


@pytest.fixture(scope="module")
def prompt_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("prompts")
    write_prompt_records(make_records(6), d / "heldout.jsonl")
    return write_prompt_records(make_records(), d / "train.jsonl")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")


def iterator(source, prompt_file, data_dir, tok, **kw):
    kw = {"batch_size": 4, "seed": 3, "shard_index": 0, "shard_count": 1, **kw}
    return make_prompt_iterator(prompt_file, tok, data_dir=data_dir if source == "tfds" else None,
                                **kw)


def take(it, n):
    return [next(it).indices for _ in range(n)]


# ---- records -------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", [".jsonl", ".parquet"])
def test_round_trip(tmp_path, suffix):
    records = make_records(7)
    path = write_prompt_records(records, tmp_path / f"set{suffix}")
    assert read_prompt_records(path) == records
    assert read_prompt_records(path)[1].answer is None  # absent answer stays absent


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("rows, message", [
    ([], "the prompt set is empty"),
    ([{"prompt": "a", "domain": "chat"}, {"domain": "math"}], "record 1): missing required field 'prompt'"),
    ([{"prompt": "a"}], "record 0): missing required field 'domain'"),
    ([{"prompt": 5, "domain": "chat"}], "field 'prompt' must be a string, got int"),
    ([{"prompt": "a", "domain": ["x"]}], "field 'domain' must be a string, got list"),
    ([{"prompt": "a", "domain": "math", "answer": 4}], "field 'answer' must be a string or absent, got int"),
    ([{"prompt": "  ", "domain": "chat"}], "field 'prompt' is empty"),
    (["[1, 2]"], "expected an object"),
    (["{not json"], "invalid JSON"),
])
def test_bad_jsonl_names_file_and_record(tmp_path, rows, message):
    path = _write_jsonl(tmp_path / "bad.jsonl", rows)
    with pytest.raises(PromptDataError, match="bad.jsonl") as e:
        read_prompt_records(path)
    assert message in str(e.value)


def test_bad_parquet_and_domains(tmp_path):
    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table({"prompt": ["a", "b"], "domain": ["chat", None]}), tmp_path / "m.parquet")
    with pytest.raises(PromptDataError, match=r"m\.parquet \(record 1\): missing required field 'domain'"):
        read_prompt_records(tmp_path / "m.parquet")
    pq.write_table(pa.table({"prompt": pa.array([], pa.string()), "domain": pa.array([], pa.string())}),
                   tmp_path / "e.parquet")
    with pytest.raises(PromptDataError, match=r"e\.parquet: the prompt set is empty"):
        read_prompt_records(tmp_path / "e.parquet")
    path = write_prompt_records(make_records(3), tmp_path / "ok.jsonl")
    with pytest.raises(PromptDataError, match=r"ok\.jsonl:2 \(record 1\): domain 'chat' is not allowed"):
        read_prompt_records(path, allowed_domains={"math", "continuation"})
    with pytest.raises(PromptDataError, match=r"record 1\): a 'math' record needs an 'answer'"):
        validate_records([{"prompt": "a", "domain": "math", "answer": "1"},
                          {"prompt": "b", "domain": "math"}], require_answer_for=("math",))
    with pytest.raises(PromptDataError, match="empty"):
        make_prompt_iterator([], None, 2, shard_index=0, shard_count=1)


# ---- chat format ---------------------------------------------------------------------------

def test_domain_suffix_and_no_thinking(tok):
    math = PromptRecord("What is 2+3?", "math", "5")
    assert user_content(math) == "What is 2+3?\n" + MATH_SUFFIX
    assert tok.decode(encode_record(tok, math)) == (
        "<|im_start|>user\nWhat is 2+3?\n" + MATH_SUFFIX + "<|im_end|>\n" + GEN_PROMPT)
    chat = PromptRecord("Say hi.", "chat")
    assert tok.decode(encode_record(tok, chat)) == "<|im_start|>user\nSay hi.<|im_end|>\n" + GEN_PROMPT
    # A prompt that already carries its suffix (as in OPDLM's training set) is not suffixed twice.
    assert user_content(PromptRecord(user_content(math), "math")) == user_content(math)
    fmt = ChatFormat(suffixes={"chat": " Be brief."}, system_prompt="sys", raw_domains=("raw",))
    assert tok.decode(encode_record(tok, chat, fmt)) == (
        "<|im_start|>system\nsys<|im_end|>\n<|im_start|>user\nSay hi. Be brief.<|im_end|>\n" + GEN_PROMPT)
    assert user_content(math, fmt) == "What is 2+3?"
    assert tok.decode(encode_record(tok, PromptRecord("plain", "raw"), fmt)) == "plain"


def test_too_long_error_and_skip(tok, tmp_path):
    records = make_records(12)
    lengths = [len(encode_record(tok, r)) for r in records]
    limit = sorted(lengths)[6]
    too_long = [r.index for r, n in zip(records, lengths) if n > limit]
    assert 0 < len(too_long) < len(records)
    with pytest.raises(PromptTooLongError) as e:
        encode_record(tok, records[too_long[0]], ChatFormat(max_prompt_tokens=limit, on_too_long="error"))
    assert f"record {too_long[0]} " in str(e.value)
    assert f"is {lengths[too_long[0]]} tokens" in str(e.value) and f"max_prompt_tokens={limit}" in str(e.value)
    with pytest.raises(PromptTooLongError, match=f"record {too_long[0]} .* {lengths[too_long[0]]} tokens"):
        make_prompt_iterator(records, tok, 2, max_prompt_tokens=limit, on_too_long="error",
                             shard_index=0, shard_count=1, data_dir=tmp_path / "tfds")
    assert not (tmp_path / "tfds").exists()  # checked up front, before the dataset is built
    it = make_prompt_iterator(records, tok, 2, max_prompt_tokens=limit, on_too_long="skip",
                              shard_index=0, shard_count=1, num_epochs=1)
    seen = [i for b in it for i in b.indices]
    assert sorted(seen) == sorted(set(range(12)) - set(too_long))
    assert it.num_skipped == len(too_long)
    with pytest.raises(PromptDataError, match="every prompt of this shard"):
        next(make_prompt_iterator(records, tok, 2, max_prompt_tokens=3, shard_index=0, shard_count=1))


# ---- tfds ----------------------------------------------------------------------------------

def test_tfds_array_record_without_tensorflow(prompt_file, data_dir, tok, monkeypatch):
    assert importlib.util.find_spec("tensorflow") is None
    from opdlm_jax.data.tfds_builder import (OpdlmPrompts, decode_example,
                                             prepare_prompt_dataset, prompt_data_source)
    heldout = prompt_file.parent / "heldout.jsonl"
    builder = prepare_prompt_dataset(prompt_file, data_dir, heldout_path=heldout)
    assert list(data_dir.glob("opdlm_prompts/*/1.0.0/*train.array_record*"))
    train = prompt_data_source(builder, "train")
    assert [decode_example(train[i]) for i in range(len(train))] == make_records()
    assert [decode_example(x) for x in builder.as_data_source("heldout")] == make_records(6)
    assert "tensorflow" not in sys.modules
    # Idempotent: the second call finds the prepared dataset and generates nothing.
    monkeypatch.setattr(OpdlmPrompts, "_generate_examples",
                        lambda *a: pytest.fail("regenerated a prepared dataset"))
    again = prepare_prompt_dataset(prompt_file, data_dir, heldout_path=heldout)
    assert again.data_dir == builder.data_dir and len(again.as_data_source("train")) == 26
    monkeypatch.undo()
    with pytest.raises(KeyError, match="no split 'heldout'"):
        prompt_data_source(prepare_prompt_dataset(heldout, data_dir), "heldout")
    # Finite heldout split, file order, short last batch.
    it = make_prompt_iterator(prompt_file, tok, 4, shard_index=0, shard_count=1,
                              data_dir=data_dir, split="heldout", heldout_path=heldout,
                              shuffle=False, num_epochs=1)
    assert [b.indices for b in it] == [[0, 1, 2, 3], [4, 5]]


@pytest.mark.parametrize("content, message", [(None, "prompt file not found"),
                                              ('{"prompt": "a"}\n', "missing required field 'domain'")])
def test_bad_prompt_file_fails_before_the_dataset_is_built(tmp_path, tok, content, message):
    path = tmp_path / "train.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(PromptDataError, match=message):
        make_prompt_iterator(path, tok, 2, shard_index=0, shard_count=1, data_dir=tmp_path / "tfds")
    assert not (tmp_path / "tfds").exists()


# ---- iterators -----------------------------------------------------------------------------

@pytest.mark.parametrize("source", SOURCES)
def test_determinism(source, prompt_file, data_dir, tok):
    a = take(iterator(source, prompt_file, data_dir, tok), 13)  # two epochs of 26
    assert a == take(iterator(source, prompt_file, data_dir, tok), 13)
    assert a != take(iterator(source, prompt_file, data_dir, tok, seed=4), 13)
    other = SOURCES[1 - SOURCES.index(source)]
    assert a == take(iterator(other, prompt_file, data_dir, tok), 13)  # the source does not matter
    flat = [i for b in a for i in b]
    assert sorted(flat[:26]) == sorted(flat[26:]) == list(range(26))  # each epoch: every record
    assert flat[:26] != flat[26:] and flat[:26] != list(range(26))  # reshuffled every epoch
    batch = next(iterator(source, prompt_file, data_dir, tok))
    records = make_records()
    assert batch.domains == [records[i].domain for i in batch.indices]
    assert batch.answers == [records[i].answer for i in batch.indices]
    assert batch.token_ids[0] == encode_record(tok, records[batch.indices[0]])


@pytest.mark.parametrize("source", SOURCES)
def test_checkpoint_resume(source, prompt_file, data_dir, tok):
    kw = {"max_prompt_tokens": 44, "read_threads": 2 if source == "tfds" else 0}
    it = iterator(source, prompt_file, data_dir, tok, **kw)
    take(it, 3)
    state = json.loads(json.dumps(it.get_state()))  # JSON-serializable
    after = take(it, 3)
    fresh = iterator(source, prompt_file, data_dir, tok, **kw)
    fresh.set_state(state)
    assert take(fresh, 3) == after
    assert fresh.num_skipped == it.num_skipped > 0 and fresh.num_batches == 6
    other = iterator(SOURCES[1 - SOURCES.index(source)], prompt_file, data_dir, tok, **kw)
    other.set_state(state)  # the same records in the same order: the state carries over
    assert take(other, 3) == after
    with pytest.raises(ValueError, match="different prompt set or different settings"):
        iterator(source, prompt_file, data_dir, tok, seed=9, **kw).set_state(state)
    with pytest.raises(ValueError, match="cannot restore a data-iterator state of version 1"):
        iterator(source, prompt_file, data_dir, tok, **kw).set_state(
            dict(state, version=1, backend="python"))  # saved by the loader with two backends


@pytest.mark.parametrize("source", SOURCES)
def test_sharding_is_disjoint_and_covers(source, prompt_file, data_dir, tok):
    shards = [[i for b in iterator(source, prompt_file, data_dir, tok, shard_index=k,
                                   shard_count=3, num_epochs=1) for i in b.indices]
              for k in range(3)]
    assert sorted(i for s in shards for i in s) == list(range(26))
    assert sorted(map(len, shards)) == [8, 9, 9]
    dropped = [len([i for b in iterator(source, prompt_file, data_dir, tok, shard_index=k,
                                        shard_count=3, num_epochs=1, shard_drop_remainder=True)
                    for i in b.indices]) for k in range(3)]
    assert dropped == [8, 8, 8]
