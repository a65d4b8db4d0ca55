#!/usr/bin/env bash
# Install opdlm_jax on every worker of a TPU VM / pod slice: code + venv + `pip install -e .[tpu]`.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: tpu/setup.sh --name NAME --zone ZONE (--repo URL | --source DIR) [options]

Put the code on all workers (git clone of --repo, or a copy of the local --source tree without
.git/.venv), create DIR/.venv and install `pip install -e '.[tpu]'` there (jax + the matching
libtpu), then print each worker's JAX device count. Safe to rerun (idempotent).

Options:
  --name NAME          TPU name (required)
  --zone ZONE          zone (required)
  --project PROJECT    GCP project
  --repo URL           git URL to clone on the workers (with --branch)
  --branch BRANCH      branch or tag for --repo (default: main)
  --source DIR         local checkout to copy instead (default when no --repo: this repository)
  --dir DIR            project directory on the workers (default: opdlm_jax, under $HOME)
  --python PYTHON      interpreter for the venv on the workers (default: python3)
  --mount-bucket B     also mount gs://B at /gcs/B with gcsfuse (a workdir that survives the VM)
  --dry-run            print the gcloud commands instead of running them
  -h, --help           this help
USAGE
}

NAME="" ZONE="" PROJECT="" REPO="" BRANCH="main" SOURCE="" DIR="opdlm_jax" PYTHON="python3" BUCKET=""
while (($#)); do
  case $1 in
    --name) need_value "$1" $#; NAME=$2; shift 2 ;;
    --zone) need_value "$1" $#; ZONE=$2; shift 2 ;;
    --project) need_value "$1" $#; PROJECT=$2; shift 2 ;;
    --repo) need_value "$1" $#; REPO=$2; shift 2 ;;
    --branch) need_value "$1" $#; BRANCH=$2; shift 2 ;;
    --source) need_value "$1" $#; SOURCE=$2; shift 2 ;;
    --dir) need_value "$1" $#; DIR=$2; shift 2 ;;
    --python) need_value "$1" $#; PYTHON=$2; shift 2 ;;
    --mount-bucket) need_value "$1" $#; BUCKET=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
require --name "$NAME"
require --zone "$ZONE"
if [[ -n $REPO && -n $SOURCE ]]; then die "give --repo or --source, not both"; fi
mapfile -t FLAGS < <(tpu_flags "$ZONE" "$PROJECT")
ssh_all() { tpu_ssh "$NAME" "$ZONE" "$PROJECT" all "$1"; }

DIR_Q=$(shell_quote "$DIR")
if [[ -n $REPO ]]; then
  REPO_Q=$(shell_quote "$REPO") BRANCH_Q=$(shell_quote "$BRANCH")
  ssh_all "if [ -d $DIR_Q/.git ]; then git -C $DIR_Q fetch --quiet origin $BRANCH_Q && git -C $DIR_Q checkout --quiet FETCH_HEAD; else git clone --quiet --branch $BRANCH_Q $REPO_Q $DIR_Q; fi"
else
  SOURCE=${SOURCE:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
  [[ -f $SOURCE/setup.cfg ]] || die "--source $SOURCE is not an opdlm_jax checkout (no setup.cfg)"
  ARCHIVE=${TMPDIR:-/tmp}/opdlm_jax_src.tar.gz
  run tar -czf "$ARCHIVE" --exclude=.git --exclude=.venv --exclude=__pycache__ --exclude='*.egg-info' \
    -C "$SOURCE" .
  run "$GCLOUD" compute tpus tpu-vm scp "$ARCHIVE" "$NAME:opdlm_jax_src.tar.gz" "${FLAGS[@]}" --worker=all
  ssh_all "mkdir -p $DIR_Q && tar -xzf opdlm_jax_src.tar.gz -C $DIR_Q && rm opdlm_jax_src.tar.gz"
fi

PY_Q=$(shell_quote "$PYTHON")
ssh_all "cd $DIR_Q && { [ -x .venv/bin/python ] || $PY_Q -m venv .venv; } && .venv/bin/python -m pip install --quiet --upgrade pip && .venv/bin/python -m pip install --quiet -e '.[tpu]' && .venv/bin/python -c 'import jax; print(jax.process_index(), jax.local_device_count(), jax.devices()[0].device_kind)'"

if [[ -n $BUCKET ]]; then
  B_Q=$(shell_quote "$BUCKET")
  ssh_all "command -v gcsfuse >/dev/null || { echo 'deb https://packages.cloud.google.com/apt gcsfuse-'\$(lsb_release -c -s)' main' | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo apt-key add - && sudo apt-get update -qq && sudo apt-get install -y -qq gcsfuse; } && sudo mkdir -p /gcs/$B_Q && sudo chown \$USER /gcs/$B_Q && { mountpoint -q /gcs/$B_Q || gcsfuse --implicit-dirs $B_Q /gcs/$B_Q; }"
fi
if ((DRY_RUN)); then log "dry run: nothing was run"; else log "setup done on all workers of $NAME"; fi
