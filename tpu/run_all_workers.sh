#!/usr/bin/env bash
# Run one command on every worker of a TPU VM / pod slice (in the project directory).
set -euo pipefail
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

usage() {
  cat <<'USAGE'
Usage: tpu/run_all_workers.sh --name NAME --zone ZONE [options] -- COMMAND...

Run COMMAND on all workers at once with
`gcloud compute tpus tpu-vm ssh NAME --worker=all --command=...`, from the project
directory (--dir). Every worker of a pod slice must run the same training command.

Options:
  --name NAME        TPU name (required)
  --zone ZONE        zone (required)
  --project PROJECT  GCP project
  --dir DIR          project directory on the workers (default: opdlm_jax, under $HOME)
  --worker W         all (default) or one worker index
  --env K=V          export K=V first (repeatable), e.g. --env OPDLM_MULTIHOST=1 on multi-host slices
  --background NAME  start detached (setsid nohup) and return: output in DIR/logs/NAME.log,
                     process group id in DIR/logs/NAME.pid, exit status in DIR/logs/NAME.rc
  --dry-run          print the gcloud command instead of running it
  -h, --help         this help
USAGE
}

NAME="" ZONE="" PROJECT="" DIR="opdlm_jax" WORKER="all" BACKGROUND=""
ENVS=()
while (($#)); do
  case $1 in
    --name) need_value "$1" $#; NAME=$2; shift 2 ;;
    --zone) need_value "$1" $#; ZONE=$2; shift 2 ;;
    --project) need_value "$1" $#; PROJECT=$2; shift 2 ;;
    --dir) need_value "$1" $#; DIR=$2; shift 2 ;;
    --worker) need_value "$1" $#; WORKER=$2; shift 2 ;;
    --env) need_value "$1" $#; ENVS+=("$2"); shift 2 ;;
    --background) need_value "$1" $#; BACKGROUND=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    -h | --help) usage; exit 0 ;;
    --) shift; break ;;
    *) usage >&2; die "unknown argument: $1 (put the command after --)" ;;
  esac
done
require --name "$NAME"
require --zone "$ZONE"
(($#)) || die "no command given (after --)"
[[ $BACKGROUND =~ ^[A-Za-z0-9_.-]*$ ]] || die "--background NAME may hold only letters, digits, _ . -"

COMMAND=$*
PREFIX="cd $DIR"
for kv in "${ENVS[@]}"; do
  [[ $kv == *=* ]] || die "--env expects K=V, got '$kv'"
  PREFIX+=" && export $(shell_quote "$kv")"
done
if [[ -n $BACKGROUND ]]; then
  # A subshell, so that a command ending in `exit N` still has its code recorded.
  INNER="($COMMAND); echo \$? > logs/$BACKGROUND.rc"
  REMOTE="$PREFIX && mkdir -p logs && rm -f logs/$BACKGROUND.rc && { setsid nohup bash -c $(shell_quote "$INNER") > logs/$BACKGROUND.log 2>&1 < /dev/null & echo \$! > logs/$BACKGROUND.pid; }"
else
  REMOTE="$PREFIX && $COMMAND"
fi
tpu_ssh "$NAME" "$ZONE" "$PROJECT" "$WORKER" "$REMOTE"
