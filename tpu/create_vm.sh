#!/usr/bin/env bash
# Create a Cloud TPU VM or pod slice (one VM per worker host) for opdlm_jax.
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: tpu/create_vm.sh --name NAME --zone ZONE [options]

Create a TPU VM / pod slice with `gcloud compute tpus tpu-vm create`.

Options:
  --name NAME               TPU name (required)
  --zone ZONE               zone, e.g. us-east5-a (v5p), us-east1-d (v6e) (required)
  --accelerator-type TYPE   v5p-8 (default), v5p-16, v6e-8, v6e-16, v5litepod-8, v4-8, ...
  --version VERSION         TPU software version (default from the type: v5p -> v2-alpha-tpuv5,
                            v6e -> v2-alpha-tpuv6e, v5e -> v2-alpha-tpuv5-lite,
                            v4 -> tpu-ubuntu2204-base)
  --project PROJECT         GCP project (default: gcloud's configured project)
  --spot                    a Spot VM (cheaper, preemptible; tpu/babysit.sh recreates it)
  --if-missing              do nothing when a TPU of that name already exists
  --dry-run                 print the gcloud commands instead of running them
  -h, --help                this help
USAGE
}

NAME="" ZONE="" TYPE="v5p-8" VERSION="" PROJECT="" SPOT=0 IF_MISSING=0
while (($#)); do
  case $1 in
    --name) need_value "$1" $#; NAME=$2; shift 2 ;;
    --zone) need_value "$1" $#; ZONE=$2; shift 2 ;;
    --accelerator-type) need_value "$1" $#; TYPE=$2; shift 2 ;;
    --version) need_value "$1" $#; VERSION=$2; shift 2 ;;
    --project) need_value "$1" $#; PROJECT=$2; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --if-missing) IF_MISSING=1; shift ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
require --name "$NAME"
require --zone "$ZONE"
VERSION=${VERSION:-$(default_runtime_version "$TYPE")}
mapfile -t FLAGS < <(tpu_flags "$ZONE" "$PROJECT")

if ((IF_MISSING)) && ! ((DRY_RUN)); then
  if "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${FLAGS[@]}" --format='value(state)' >/dev/null 2>&1; then
    log "TPU $NAME already exists in $ZONE; nothing to do"
    exit 0
  fi
fi

CREATE=("$GCLOUD" compute tpus tpu-vm create "$NAME" "${FLAGS[@]}" "--accelerator-type=$TYPE"
  "--version=$VERSION")
if ((SPOT)); then CREATE+=(--spot); fi
run "${CREATE[@]}"
