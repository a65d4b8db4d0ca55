"""A run whose workdir is `gs://...`: every file goes through etils.epath (gcsfs) and Orbax
(tensorstore's gcs driver), tested offline against a local Cloud Storage emulator
(`gcp-storage-emulator`, in memory). Other URL schemes are refused at start-up."""
import json
import os
import subprocess
import sys
import time

import pytest

from multiprocess import free_port
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
    extra = {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
             "GOOGLE_AUTH_TOKEN_FOR_TESTING": "offline"}
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


def test_a_run_lives_in_a_gs_workdir_and_resumes_there(tiny_assets, gcs, tmp_path):
    from etils import epath

    workdir = "gs://bkt/runs/tiny"
    extra = ["--config.steps=2", f"--config.data.data_dir={tmp_path / 'tfds'}"]
    e = dict(env(), **gcs)
    out = subprocess.run(command(tiny_assets, workdir, *extra), env=e, cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert not (ROOT / "gs:").exists()  # no local folder named after the URL
    run = epath.Path(workdir)
    assert sorted(p.name for p in (run / "checkpoints").iterdir() if p.name.isdigit()) == ["1", "2"]
    for name in ("config.json", "run.json", "train_summary.json"):
        assert json.loads((run / name).read_text())
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2]

    extra[0] = "--config.steps=3"
    out = subprocess.run(command(tiny_assets, workdir, *extra), env=e, cwd=ROOT, capture_output=True, text=True,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
    assert "resumed from step 2" in out.stderr
    steps = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]
    assert json.loads((run / "train_summary.json").read_text())["status"] == "finished"


@pytest.mark.parametrize("url", ["memory://bucket/run", "hdfs://cluster/run"])
def test_an_unsupported_workdir_scheme_is_refused(tiny_assets, tmp_path, url):
    out = subprocess.run(command(tiny_assets, url), env=env(), cwd=tmp_path, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    assert out.stderr.strip().splitlines()[-1].startswith(f"error: --workdir {url}: ")
