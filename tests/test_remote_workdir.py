"""A run whose workdir is `gs://...`: every file besides Orbax's arrays goes through etils.epath
(gcsfs), tested offline against a local Cloud Storage emulator (`gcp-storage-emulator`, in
memory). Other URL schemes are refused at start-up.

Orbax writes its arrays with tensorstore's gcs driver; against this emulator its conditional
manifest writes fail intermittently ("Malformed StorageGeneration": the emulator ignores
ifGenerationMatch), so a whole training run on the emulator is not a reliable test and is not
part of the suite; it passed once by hand (README, "Running on a pod slice")."""
import json
import os
import subprocess
import sys
import time

import pytest

from jax_processes import free_port
from test_trainer import ROOT, command, env

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """A Cloud Storage emulator with bucket `bkt`; -> the environment pointing clients at it."""
    port = free_port()
    log = open(tmp_path_factory.mktemp("gcs") / "emulator.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "gcp_storage_emulator", "start", "--port", str(port),
                             "--in-memory", "--default-bucket", "bkt"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://localhost:{port}"
    extra = {"STORAGE_EMULATOR_HOST": url, "GOOGLE_AUTH_TOKEN_FOR_TESTING": "offline"}
    deadline = time.time() + 60
    import socket

    while True:
        try:
            socket.create_connection(("localhost", port), timeout=1).close()
            break
        except OSError:
            assert time.time() < deadline and proc.poll() is None, "the GCS emulator did not start"
            time.sleep(0.2)
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    yield extra
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    proc.terminate()
    proc.wait(timeout=30)


def test_run_files_live_in_a_gs_workdir(gcs):
    """Everything a run writes besides Orbax's arrays, on a gs:// workdir through etils.epath
    (gcsfs against the emulator): the run's identity and its refusal of other settings, config
    and summary files, metrics and data order (rewritten whole, since objects cannot be appended
    to), and the cut back to a restored step."""
    from opdlm_jax.errors import BadInput
    from opdlm_jax.train.metrics_writer import MetricsWriter, read_metrics
    from opdlm_jax.train.run_files import is_remote, run_directory, truncate_jsonl, write_json
    from opdlm_jax.train.run_identity import FILENAME, check_same_run, stored_identity

    workdir = run_directory("gs://bkt/runs/tiny")
    assert is_remote(workdir) and str(workdir) == "gs://bkt/runs/tiny"
    identity = {"method": "opdlm", "seed": 0}
    write_json(workdir / FILENAME, identity)
    write_json(workdir / "config.json", {"steps": 3})
    assert stored_identity(workdir) == identity
    with pytest.raises(BadInput, match="method: run has 'opdlm', this config 'sft'"):
        check_same_run(stored_identity(workdir), dict(identity, method="sft"), workdir)

    writer = MetricsWriter(workdir, tensorboard=True)  # TensorBoard: local workdirs only (a warning)
    for step in (1, 2, 3):
        writer.write(step, {"loss": 1.0 / step})
        writer.write_data_order(step, [step, step + 10])
    writer.close()
    assert [r["step"] for r in read_metrics(workdir)] == [1, 2, 3]
    assert truncate_jsonl(workdir / "metrics.jsonl", 2) == 1  # resumed from step 2
    assert truncate_jsonl(workdir / "data_order.jsonl", 2) == 1
    writer = MetricsWriter(workdir, tensorboard=False)  # the resumed run appends after step 2
    writer.write(3, {"loss": 0.25})
    writer.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(workdir)] == [(1, 1.0), (2, 0.5), (3, 0.25)]
    assert (workdir / "data_order.jsonl").read_text().count("\n") == 2
    assert json.loads((workdir / "config.json").read_text()) == {"steps": 3}
    assert not (ROOT / "gs:").exists()  # nothing local named after the URL


@pytest.mark.parametrize("url", ["memory://bucket/run", "hdfs://cluster/run"])
def test_an_unsupported_workdir_scheme_is_refused(tiny_assets, tmp_path, url):
    out = subprocess.run(command(tiny_assets, url), env=env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: --workdir {url}: ")
