"""A training run's checkpoint decodes with the generate command and exports to a HF directory
that transformers loads, with causal logits equal to ours."""
import io
import json

import jax
import numpy as np
import pytest
import torch

from opdlm_jax import forward, generate
from opdlm_jax.export import main as export_main
from opdlm_jax.checkpoints.orbax import load_model_from_run

@pytest.fixture(scope="module")
def run_dir(tiny_run):
    return tiny_run  # the session's shared 2-step run (tests/conftest.py)


def test_generate_decodes_from_the_checkpoint(run_dir):
    args = generate.build_parser().parse_args(
        ["--checkpoint", str(run_dir), "--prompt", "Hello", "--chat", "--max-new-tokens", "8", "--json"])
    out = io.StringIO()
    assert generate.run(args, out=out) == 0
    record = json.loads(out.getvalue().splitlines()[0])
    assert 1 <= len(record["token_ids"]) <= 8


def test_export_loads_in_transformers_with_equal_logits(run_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert export_main(["--checkpoint", str(run_dir), "--out", str(tmp_path / "hf")]) == 0
    ours = load_model_from_run(run_dir)
    trained = jax.tree.map(np.asarray, ours.params)
    base_leaves = load_model_from_run(run_dir, step=1).params
    assert any(not np.array_equal(a, np.asarray(b)) for a, b in
               zip(jax.tree.leaves(trained), jax.tree.leaves(base_leaves)))  # step 2 differs from step 1
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "hf", torch_dtype=torch.float32,
                                              attn_implementation="eager").eval()
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    assert tok.convert_tokens_to_ids("<|mask|>") == ours.mask_token_id
    tokens = np.array([tok.encode("The quick brown fox jumps over the lazy dog.")])
    with torch.no_grad():
        ref = hf(torch.tensor(tokens)).logits.numpy()
    mine = np.asarray(forward(ours.config, ours.params, tokens, mode="causal"))
    assert np.abs(ref - mine).max() <= 1e-4
    # The run's decoding settings travel in config.json ("opdlm") and a README says what it is for;
    # loading the export with our loader brings them back (it decodes as the run did).
    section = json.loads((tmp_path / "hf" / "config.json").read_text())["opdlm"]
    meta = ours.run_meta
    assert (section["block_size"], section["alignment"], section["mask_token_id"]) == \
        (meta["block_size"], meta["alignment"], meta["mask_token_id"])
    assert section["decoding"]["strategy"] == "low_confidence_static"
    assert hf.config.opdlm["alignment"] == meta["alignment"]  # transformers keeps the extra field
    readme = (tmp_path / "hf" / "README.md").read_text()
    assert "opdlm-generate --model" in readme and f"Block size {meta['block_size']}" in readme
    from opdlm_jax import load_model

    assert load_model(tmp_path / "hf").run_meta["alignment"] == meta["alignment"]


def test_export_parity_report_on_a_run(run_dir, tmp_path):
    from experiments.export_parity import compare

    rows = compare(str(run_dir), str(tmp_path / "hf"), prompts=("Hello", "What is 2 + 2?"))
    assert len(rows) == 2
    for r in rows:
        assert r["ours_vs_hf32"] <= 1e-4 and r["ours_vs_hf64"] <= 1e-4  # float32, tiny model
        assert r["hf32_vs_hf64"] < 1e-4 and r["max_abs_logit"] > 0
