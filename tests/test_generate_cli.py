"""The generate command: argument errors, and one JSON run on the embedded SmolLM2."""
import io
import json

import pytest

from opdlm_jax import generate


@pytest.mark.parametrize("argv,message", [
    (["--threshold", "1.5"], "--threshold 1.5 is outside [0, 1]"),
    (["--block-size", "5", "--max-new-tokens", "32"], "--block-size 5 does not divide --max-new-tokens 32"),
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
