"""The lm-eval-harness adapter on a tiny random model, offline: generate_until, the ELBO
loglikelihood, loglikelihood_rolling and a full `lm_eval.simple_evaluate` run on local JSONL tasks.

Shapes are kept few (prompts < 16 tokens, 4 new tokens, batch 2) so that few programs compile.
"""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("lm_eval")

from lm_eval.api.instance import Instance  # noqa: E402
from lm_eval.api.registry import get_model  # noqa: E402

from opdlm_jax.diffusion.elbo import elbo_loglikelihoods, sample_masks  # noqa: E402
from opdlm_jax.eval.lm_eval_adapter import OpdlmJaxLM, _text_seed  # noqa: E402
from opdlm_jax.eval.records import EvalResult, read_records  # noqa: E402
from opdlm_jax.decoding.batching import left_pad  # noqa: E402
from opdlm_jax.decoding.sampling import ban_tokens  # noqa: E402
from opdlm_jax.models import forward  # noqa: E402
from tiny_hf import make_tiny_hf_dir  # noqa: E402

SHARPEN = 8.0  # scale the random lm_head: peaked predictions, so preferences are clear


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_hf_dir(tmp_path_factory.mktemp("tiny") / "hf")


@pytest.fixture(scope="module")
def lm(model_dir, tmp_path_factory):
    records = tmp_path_factory.mktemp("records") / "gen.jsonl"
    # Built the way the harness builds it: from a model_args string (values arrive as text).
    model = OpdlmJaxLM.create_from_arg_string(
        f"model={model_dir},block_size=4,steps_per_block=4,max_gen_toks=4,batch_size=2,"
        f"elbo_samples=4,elbo_rows=16,greedy_check=decode,records_path={records}",
        {"batch_size": None, "device": "cpu"})
    params = dict(model.params)
    params["lm_head"] = params["lm_head"] * SHARPEN
    model.params = jax.device_put(params)
    return model


def _ctx(lm, text):
    return lm.tok_encode(text)


def test_registered():
    assert get_model("opdlm_jax") is OpdlmJaxLM
    assert get_model("opdlm-jax") is OpdlmJaxLM


def test_generate_until_and_records(lm):
    prompts = ["Q: 2+3=", "Hello, you", "abc"]
    full = lm.generate_until([Instance("generate_until", {}, (p, {"until": [], "max_gen_toks": 4}), i)
                              for i, p in enumerate(prompts)])
    assert len(full) == 3 and all(isinstance(t, str) for t in full)
    # Static decoding with steps_per_block == block_size: exactly one token per round.
    assert lm.last_generation_stats["tokens_per_round"] == 1.0
    # `until` cuts the text at the earliest stop string (greedy decoding is deterministic).
    text = next((t for t in full if len(t) >= 2), None)
    assert text is not None, full
    prompt, stop = prompts[full.index(text)], text[1]
    cut = lm.generate_until([Instance("generate_until", {}, (prompt, {"until": [stop, "\u0000"]}), 0)])
    assert cut == [text[:text.find(stop)]]
    records = read_records(lm.records_path)
    assert len(records) >= 3
    assert {r.settings.strategy for r in records} == {"low_confidence_static"}
    assert all(r.settings.block_size == 4 and r.settings.temperature == 0.0 for r in records)
    summary = EvalResult.from_records(records)
    assert summary.tokens_per_round == 1.0 and summary.nfe > 0 and math.isnan(summary.accuracy_mean)


def test_loglikelihood_requests(lm):
    # Short continuations (one block) and an empty context (scored after the prefix token).
    reqs = [Instance("loglikelihood", {}, (ctx, cont), i)
            for i, (ctx, cont) in enumerate([("The answer is", " A"), ("The answer is", " B"),
                                             ("The answer is ", "A B"), ("", "hi")])]
    out = lm.loglikelihood(reqs)
    assert len(out) == 4
    for value, greedy in out:
        assert isinstance(value, float) and math.isfinite(value) and value <= 0
        assert isinstance(greedy, bool)
    assert out[2][0] < min(out[0][0], out[1][0])  # " A B": 4 tokens cost more than 2 (peaked model)
    again = lm.loglikelihood(list(reversed(reqs)))  # seeded by the request's text, not its order
    assert [v for v, _ in again] == [v for v, _ in reversed(out)]
    rolling = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (t,), i)
                                        for i, t in enumerate(["hey", "you!", "", "abc"])])
    assert all(math.isfinite(v) and v < 0 for i, v in enumerate(rolling) if i != 2) and rolling[2] == 0.0


def test_loglikelihood_rolling_windows(lm, monkeypatch):
    """Windows of 4 tokens, each conditioned on the 4 before it: the sum of their ELBOs."""
    monkeypatch.setattr(lm, "rolling_window", 4)
    text = "abcdefghij"
    total, = lm.loglikelihood_rolling([Instance("loglikelihood_rolling", {}, (text,), 0)])
    full = [lm.prefix_id] + lm.tok_encode(text)
    pairs = [(full[:1], full[1:5]), (full[1:5], full[5:9]), (full[5:9], full[9:11])]
    seeds = [_text_seed(lm.elbo_seed, text, str(start)) for start in (1, 5, 9)]
    parts = elbo_loglikelihoods(lm.config, lm.params, pairs, mask_id=lm.mask_id, pad_id=lm.pad_id,
                                block_size=4, samples=lm.elbo_samples, seeds=seeds, rows=16)
    assert total == pytest.approx(sum(parts), rel=1e-6)


def test_preferred_continuation_scores_higher_and_is_greedy(lm):
    ctx = _ctx(lm, "Q: 2+3=")
    sampler = lm.sampler
    (_, _, _, _, result), = lm._generate([ctx, ctx], sampler, 4)
    preferred = list(result.token_ids[0])
    # The least likely token at each position under the same (all-masked) state: a continuation
    # the model strongly disprefers, of the same length.
    other = [int(t) for t in np.asarray(_masked_block_argmin(lm, ctx))[:len(preferred)]]
    assert other != preferred
    kwargs = dict(mask_id=lm.mask_id, pad_id=lm.pad_id, block_size=4, samples=8, rows=16)
    good, bad = elbo_loglikelihoods(lm.config, lm.params, [(ctx, preferred), (ctx, other)], **kwargs)
    assert good <= 0 and bad <= 0
    assert good > bad + 5.0
    assert lm._is_greedy([(ctx, preferred), (ctx, other)]) == [True, False]


def _masked_block_argmin(lm, ctx):
    tokens, valid = left_pad([ctx], 16, lm.pad_id)
    tokens = np.concatenate([tokens, np.full((1, 4), lm.mask_id, np.int32)], 1)
    valid = np.concatenate([valid, np.ones((1, 4), bool)], 1)
    logits = ban_tokens(_block_logits(lm, tokens, valid), (lm.mask_id,))
    logits = jnp.where(jnp.arange(logits.shape[-1]) < 3, 1e9, logits)  # not the special tokens
    return jnp.argmin(logits[0, 16:], axis=-1)


def _block_logits(lm, tokens, valid):
    """A plain block-causal forward, blocks aligned to column 16 (the continuation start)."""
    cols = jnp.arange(tokens.shape[1])
    block_ids = jnp.broadcast_to((cols - 16) // 4, tokens.shape)
    return _forward(lm.config, lm.params, jnp.asarray(tokens), mode="block", valid=jnp.asarray(valid),
                    block_ids=block_ids)


_forward = jax.jit(forward, static_argnames=("config", "mode", "block_size", "return_hidden"))


@pytest.mark.parametrize("alignment", ["same_position", "shifted"])
def test_one_token_elbo_is_the_exact_masked_logprob(lm, alignment):
    """A one-token continuation: one mask, weight 1, so the estimate is exact and equals a plain
    block-causal forward over [context | 4 masks] (blocks aligned to the continuation start)."""
    ctx, target = _ctx(lm, "Hello, you"), 70
    value, = elbo_loglikelihoods(lm.config, lm.params, [(ctx, [target])], mask_id=lm.mask_id,
                                 pad_id=lm.pad_id, block_size=4, alignment=alignment, samples=3, rows=4)
    tokens, valid = left_pad([ctx], 16, lm.pad_id)
    tokens = np.concatenate([tokens, np.full((1, 4), lm.mask_id, np.int32)], 1)
    valid = np.concatenate([valid, np.ones((1, 4), bool)], 1)
    logits = ban_tokens(_block_logits(lm, tokens, valid), (lm.mask_id,))
    col = 16 if alignment == "same_position" else 15
    expected = float(jax.nn.log_softmax(logits[0, col])[target])
    assert value == pytest.approx(expected, abs=1e-4)


def test_elbo_variance_shrinks_with_samples(lm):
    ctx, cont = _ctx(lm, "Q: 2+3="), _ctx(lm, "abcdef")  # 6 tokens: a full and a partial block
    kwargs = dict(mask_id=lm.mask_id, pad_id=lm.pad_id, block_size=4, rows=16)
    pairs = [(ctx, cont)] * 16
    one = np.array(elbo_loglikelihoods(lm.config, lm.params, pairs, samples=1, seeds=range(16), **kwargs))
    many = np.array(elbo_loglikelihoods(lm.config, lm.params, pairs, samples=16, seeds=range(100, 116),
                                        **kwargs))
    assert np.isfinite(one).all() and np.isfinite(many).all()
    assert (one <= 0).all() and (many <= 0).all()
    assert one.var() > 0
    assert many.var() < one.var() / 3  # 1/16 in expectation
    assert abs(many.mean() - one.mean()) < 4 * one.std() / math.sqrt(16)  # the same bound (4 s.e.)


def test_sample_masks():
    rng = np.random.default_rng(0)
    masked, weights = sample_masks(rng, 6, 4, 200, "count")
    for block in (slice(0, 4), slice(4, 6)):
        assert masked[:, block].any(-1).all()  # at least one mask per block, every sample
        k = block.stop - block.start
        counts = masked[:, block].sum(-1)
        assert np.allclose(weights[:, block].max(-1), k / counts)
    masked, weights = sample_masks(rng, 6, 4, 200, "bernoulli")
    assert (weights[masked] >= 1).all() and (weights[~masked] == 0).all()


def test_simple_evaluate_offline(lm, tmp_path):
    import lm_eval
    from lm_eval.tasks import TaskManager

    rows = [{"question": f"{i}+1=", "answer": str(i + 1), "choices": [" yes", " no"], "label": i % 2}
            for i in range(4)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    source = {"dataset_path": "json", "test_split": "test",
              "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "hf_cache")}}
    gen = {"task": "opdlm_tiny_gen", **source, "output_type": "generate_until", "doc_to_text": "{{question}}",
           "doc_to_target": "{{answer}}", "metric_list": [{"metric": "exact_match"}],
           "generation_kwargs": {"until": ["\n"], "max_gen_toks": 4, "do_sample": False}}
    mc = {"task": "opdlm_tiny_mc", **source, "output_type": "multiple_choice", "doc_to_text": "{{question}}",
          "doc_to_target": "{{label}}", "doc_to_choice": "{{choices}}", "metric_list": [{"metric": "acc"}]}
    out = lm_eval.simple_evaluate(model=lm, tasks=[gen, mc], task_manager=TaskManager(include_defaults=False),
                                  bootstrap_iters=0, log_samples=True)
    results = out["results"]
    assert 0.0 <= results["opdlm_tiny_gen"]["exact_match,none"] <= 1.0
    assert 0.0 <= results["opdlm_tiny_mc"]["acc,none"] <= 1.0
    for sample in out["samples"]["opdlm_tiny_mc"]:
        for (value, greedy), in sample["resps"]:
            assert math.isfinite(value) and value <= 0


def test_entry_point_translates_our_flags(tiny_run):
    from opdlm_jax import lm_eval as entry

    assert entry.harness_argv(["--checkpoint", str(tiny_run), "--tasks", "gsm8k", "--model_args", "threshold=0.8"]) == \
        ["run", "--model", "opdlm_jax", "--model_args", f"checkpoint={tiny_run},threshold=0.8", "--tasks", "gsm8k"]
    assert entry.harness_argv(["run", "--pretrained", "smollm2-135m", "--limit", "3"]) == \
        ["run", "--model", "opdlm_jax", "--model_args", "pretrained=smollm2-135m", "--limit", "3"]


@pytest.mark.parametrize("argv,message", [
    (["--tasks", "gsm8k"], "error: name what to evaluate: --checkpoint RUN_DIR or --pretrained NAME_OR_PATH"),
    (["--pretrained", "smollm2-135m", "--model", "hf"], "error: --model is always opdlm_jax here; name the "
                                                        "weights with --checkpoint RUN or --pretrained NAME"),
    (["--checkpoint", "/nonexistent/run"], "error: /nonexistent/run: no such run directory"),
])
def test_entry_point_bad_input_is_one_line(argv, message, capsys):
    from opdlm_jax import lm_eval as entry

    assert entry.main(argv) == 2
    assert capsys.readouterr().err.strip() == message


def test_entry_point_evaluates_a_run_directory(tiny_run, tmp_path, monkeypatch):
    """`python -m opdlm_jax.lm_eval --checkpoint RUN` on a local task: the run's student, with the
    run's block size and alignment, through lm-eval's own command line (no export)."""
    import yaml

    from opdlm_jax import lm_eval as entry
    from opdlm_jax.checkpoints.orbax import read_run_meta
    from opdlm_jax.eval.lm_eval_adapter import OpdlmJaxLM

    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"question": f"{i}+1=", "answer": str(i + 1)}) + "\n" for i in range(2)))
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "tiny_gen.yaml").write_text(yaml.safe_dump({
        "task": "opdlm_cli_gen", "dataset_path": "json", "test_split": "test",
        "dataset_kwargs": {"data_files": {"test": str(data)}, "cache_dir": str(tmp_path / "hf_cache")},
        "output_type": "generate_until", "doc_to_text": "{{question}}", "doc_to_target": "{{answer}}",
        "metric_list": [{"metric": "exact_match"}],
        "generation_kwargs": {"until": ["\n"], "max_gen_toks": 4, "do_sample": False}}))
    built = []
    monkeypatch.setattr(OpdlmJaxLM, "__init__", _recording_init(OpdlmJaxLM.__init__, built))
    out = tmp_path / "out"
    monkeypatch.setattr("sys.argv", ["opdlm-lm-eval"])
    assert entry.main(["--checkpoint", str(tiny_run), "--include_path", str(tasks), "--tasks", "opdlm_cli_gen",
                       "--batch_size", "2", "--output_path", str(out)]) == 0
    meta = read_run_meta(tiny_run)
    assert (built[0].sampler.block_size, built[0].sampler.alignment) == (meta["block_size"], meta["alignment"])
    results = [json.loads(p.read_text()) for p in out.rglob("results_*.json")]
    assert "exact_match,none" in results[0]["results"]["opdlm_cli_gen"]


def _recording_init(init, built):
    def record(self, *args, **kwargs):
        init(self, *args, **kwargs)
        built.append(self)
    return record
