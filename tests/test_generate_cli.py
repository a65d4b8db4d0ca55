"""The generate command: argument errors, defaults that follow the model or run, and JSON runs on
the embedded SmolLM2 and on a tiny shifted-alignment run."""
import io
import json
from pathlib import Path

import pytest

from opdlm_jax import generate
from opdlm_jax.text_generation import UNTRAINED_NOTE


@pytest.mark.parametrize("argv,message", [
    (["--threshold", "1.5"], "--threshold 1.5 is outside [0, 1]"),
    (["--mode", "diffusion", "--block-size", "5", "--max-new-tokens", "32"],
     "--block-size 5 does not divide --max-new-tokens 32"),
    (["--strategy", "fastest"], "unknown strategy 'fastest'"),
    (["--alignment", "left"], "unknown alignment 'left'"),
])
def test_bad_arguments_get_one_line_error_and_nonzero_exit(argv, message, capsys):
    rc = generate.main(["--model", "smollm2-135m", "--prompt", "hi"] + argv)
    err = capsys.readouterr().err
    assert rc != 0
    assert message in err and err.count("\n") == 1


def test_missing_model_path_is_an_error(capsys):
    rc = generate.main(["--model", "/nonexistent/model", "--prompt", "hi"])
    assert rc != 0 and "/nonexistent/model" in capsys.readouterr().err


def test_json_output_on_smollm2_ar_and_diffusion():
    for mode in ("ar", "diffusion"):
        args = generate.build_parser().parse_args(
            ["--model", "smollm2-135m", "--prompt", "What is 2+2?", "--chat", "--mode", mode,
             "--max-new-tokens", "8", "--json", "--alignment", "shifted"])
        out = io.StringIO()
        assert generate.run(args, out=out) == 0
        record = json.loads(out.getvalue().strip().splitlines()[0])
        assert set(record) >= {"completion", "token_ids", "nfe", "tokens_per_round", "tokens_per_second"}
        assert 1 <= len(record["token_ids"]) <= 8 and record["nfe"] >= 1


def _run_json(argv):
    """generate.run on argv with --json -> (first record, stderr text)."""
    out, err = io.StringIO(), io.StringIO()
    assert generate.run(generate.build_parser().parse_args(argv + ["--json"]), out=out, err=err) == 0
    return json.loads(out.getvalue().splitlines()[0]), err.getvalue()


def test_a_plain_model_decodes_ar_by_default_and_diffusion_is_flagged_as_untrained():
    """No --mode: a plain model is an AR model (the teacher); as diffusion it is the unconverted
    student, which the user is told in one line."""
    base = ["--model", "smollm2-135m", "--prompt", "What is 2+2?", "--chat", "--max-new-tokens", "8"]
    record, err = _run_json(base)
    assert record["mode"] == "ar" and err == ""
    record, err = _run_json(base + ["--mode", "diffusion"])
    assert record["mode"] == "diffusion" and err.strip() == UNTRAINED_NOTE


def test_help_shows_defaults_and_choices(capsys):
    assert generate.main(["--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "low_confidence_dynamic" in text and "shifted" in text  # choices
    assert "(default: 64)" in text and "default: ar for --model, diffusion for --checkpoint" in text


@pytest.fixture(scope="module")
def shifted_run(tiny_assets, tmp_path_factory):
    """A demo-quick-like run with the shifted alignment (1 step of the tiny model)."""
    from opdlm_jax.train.loop import train
    from tests_configs_loader import load_config

    config = load_config(Path(__file__).resolve().parent / "configs" / "tiny_train.py")
    config.teacher, config.data.train = str(tiny_assets[0]), str(tiny_assets[1])
    config.data.max_prompt_tokens = 512
    config.steps, config.rollout.alignment = 1, "shifted"
    workdir = tmp_path_factory.mktemp("shifted_run") / "run"
    train(config, workdir, progress=False)
    return workdir


def test_a_checkpoint_decodes_with_the_alignment_it_was_trained_with(shifted_run):
    base = ["--checkpoint", str(shifted_run), "--prompt", "Hello", "--chat", "--max-new-tokens", "8"]
    implicit, err = _run_json(base)
    explicit, _ = _run_json(base + ["--alignment", "shifted"])
    assert implicit["mode"] == "diffusion" and err == ""
    assert implicit["token_ids"] == explicit["token_ids"]
    _, err = _run_json(base + ["--alignment", "same_position"])  # a conflicting flag wins, with a warning
    assert err.strip() == ("warning: alignment same_position differs from the shifted the run was trained "
                           "with; decoding with same_position")


def test_ar_streams_token_by_token(tiny_assets):
    """on_token sees each token of sequence 0 as it is sampled, in order, and the text the CLI
    streams equals the completion decoded at the end."""
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.decoding.api import generate_ar
    from opdlm_jax.decoding.sampling import SamplingParams
    from opdlm_jax.text_generation import TextStreamer, completion_text

    m = load_model(str(tiny_assets[0]))
    seen = []
    result = generate_ar(m.config, m.params, [[5, 6, 7], [8, 9]], sampling=SamplingParams(greedy=True),
                         max_new_tokens=6, stop_ids=(), pad_id=0, banned_ids=(m.mask_token_id,),
                         on_token=lambda i, tokens, active: seen.append((int(i), int(tokens[0]), bool(active[0]))))
    assert [i for i, _, _ in seen] == list(range(6))
    assert [t for _, t, active in seen if active] == result.token_ids[0]
    out = io.StringIO()
    streamer = TextStreamer(m, out)
    generate_ar(m.config, m.params, [[5, 6, 7]], sampling=SamplingParams(greedy=True), max_new_tokens=6,
                stop_ids=(), pad_id=0, banned_ids=(m.mask_token_id,), on_token=streamer.on_token)
    # A character still cut between tokens at the end is held back (random tiny-model bytes).
    assert out.getvalue().rstrip("\ufffd") == completion_text(m, result.token_ids[0]).rstrip("\ufffd")
    assert out.getvalue()
