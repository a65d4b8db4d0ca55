"""Decoding over a mesh: the prompt batch split over the batch axes, params in their training
shardings, completions gathered back. Greedy results equal one-device decoding, on 8 fake
devices in this process and as 2 processes x 2 devices."""
import json
from pathlib import Path

import jax
import pytest

from jax_processes import run

ROOT = Path(__file__).resolve().parents[1]

# The program each process runs: the same prompts everywhere, decoded over all processes' devices.
PROGRAM = r"""
import json, sys
from opdlm_jax.sharding import initialize_distributed
initialize_distributed()
import jax
from opdlm_jax.checkpoints.loading import load_model
from opdlm_jax.decoding import SamplerConfig
from opdlm_jax.decoding.api import generate_ar, generate_diffusion
from opdlm_jax.decoding.sampling import SamplingParams
from opdlm_jax.sharding import make_mesh
model_dir, out = sys.argv[1], sys.argv[2]
m = load_model(model_dir)
prompts = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22, 23, 24, 25, 26]]
mesh = make_mesh(data=-1, devices=jax.devices())
ar = generate_ar(m.config, m.params, prompts, sampling=SamplingParams(greedy=True), max_new_tokens=8,
                 stop_ids=(), pad_id=0, banned_ids=(m.mask_token_id,), mesh=mesh)
diff = generate_diffusion(m.config, m.params, prompts, sampler=SamplerConfig(block_size=4, steps_per_block=4),
                          max_new_tokens=8, stop_ids=(), mask_id=m.mask_token_id, pad_id=0, mesh=mesh)
if jax.process_index() == 0:
    json.dump({"ar": ar.token_ids, "diffusion": diff.token_ids, "steps": diff.step_maps,
               "devices": jax.device_count()}, open(out, "w"))
"""

PROMPTS = [[5, 6, 7, 8, 9], [11, 12], [20, 21, 22, 23, 24, 25, 26]]


def one_device(model_dir: str) -> dict:
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.decoding import SamplerConfig
    from opdlm_jax.decoding.api import generate_ar, generate_diffusion
    from opdlm_jax.decoding.sampling import SamplingParams

    m = load_model(model_dir)
    ar = generate_ar(m.config, m.params, PROMPTS, sampling=SamplingParams(greedy=True), max_new_tokens=8,
                     stop_ids=(), pad_id=0, banned_ids=(m.mask_token_id,))
    diff = generate_diffusion(m.config, m.params, PROMPTS, sampler=SamplerConfig(block_size=4, steps_per_block=4),
                              max_new_tokens=8, stop_ids=(), mask_id=m.mask_token_id, pad_id=0)
    return {"ar": ar.token_ids, "diffusion": diff.token_ids, "steps": diff.step_maps}


@pytest.fixture(scope="module")
def reference(tiny_assets):
    return one_device(str(tiny_assets[0]))


def test_decoding_over_8_devices_equals_one(tiny_assets, reference):
    """3 prompts over a data=4 x tensor=2 mesh: padded to 4 rows, split, gathered, trimmed."""
    from opdlm_jax.checkpoints.loading import load_model
    from opdlm_jax.decoding import SamplerConfig
    from opdlm_jax.decoding.api import generate_ar, generate_diffusion
    from opdlm_jax.decoding.sampling import SamplingParams
    from opdlm_jax.sharding import make_mesh

    m = load_model(str(tiny_assets[0]))
    mesh = make_mesh(data=4, fsdp=1, tensor=2, devices=jax.devices()[:8])
    ar = generate_ar(m.config, m.params, PROMPTS, sampling=SamplingParams(greedy=True), max_new_tokens=8,
                     stop_ids=(), pad_id=0, banned_ids=(m.mask_token_id,), mesh=mesh)
    diff = generate_diffusion(m.config, m.params, PROMPTS, sampler=SamplerConfig(block_size=4, steps_per_block=4),
                              max_new_tokens=8, stop_ids=(), mask_id=m.mask_token_id, pad_id=0, mesh=mesh)
    assert ar.token_ids == reference["ar"]
    assert diff.token_ids == reference["diffusion"] and diff.step_maps == reference["steps"]
    assert len(ar.token_ids) == 3 and all(len(t) == 8 for t in ar.token_ids)


@pytest.mark.slow
def test_decoding_as_two_processes_equals_one(tiny_assets, reference, tmp_path):
    out = tmp_path / "completions.json"
    run(["-c", PROGRAM, str(tiny_assets[0]), str(out)], 2, 2, tmp_path / "logs", timeout=600)
    got = json.loads(out.read_text())
    assert got.pop("devices") == 4
    assert got == reference


@pytest.mark.slow
def test_evaluation_as_two_processes_equals_one(tiny_assets, tmp_path):
    """experiments.evaluate on a slice: both processes decode each batch together, process 0
    alone scores and writes; the records equal a one-process evaluation's."""
    fixtures = ROOT / "tests" / "fixtures" / "opdlm_eval"
    argv = ["-m", "experiments.evaluate", "--model", str(tiny_assets[0]), "--data-dir", str(fixtures),
            "--datasets", "GSM8K", "--limit", "3", "--max-new-tokens", "8", "--batch-size", "3",
            "--chunk-size", "2", "--no-progress"]
    run([*argv, "--out", str(tmp_path / "one")], 1, 1, tmp_path / "logs_one", timeout=600)
    run([*argv, "--out", str(tmp_path / "two")], 2, 2, tmp_path / "logs_two", timeout=600)

    def records(out):
        return [json.loads(line) for line in (out / "records" / "GSM8K.jsonl").read_text().splitlines()]
    assert records(tmp_path / "two") == records(tmp_path / "one")
    assert json.loads((tmp_path / "two" / "results.json").read_text()) == \
        json.loads((tmp_path / "one" / "results.json").read_text())
    assert "wrote" not in (tmp_path / "logs_two" / "process1.log").read_text()  # process 0 writes
