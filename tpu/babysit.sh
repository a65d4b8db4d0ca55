#!/usr/bin/env bash
# Keep a training run alive on a (Spot) TPU VM: recreate the VM when it is preempted or gone,
# restart the run when it was preempted or killed (the trainer resumes from the latest checkpoint
# in its workdir); stop when it failed (exit 1 or 2: a restart would fail the same way).
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source-path=SCRIPTDIR
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() {
  cat <<'USAGE'
Usage: tpu/babysit.sh --name NAME --zone ZONE --command 'CMD' [options]

Loop until the run finishes (exit status 0 on every worker), fails, or the restarts are used up:
  1. `gcloud compute tpus tpu-vm describe` the TPU. Missing, PREEMPTED, TERMINATED, STOPPED or
     SUSPENDED: delete it (if there), recreate it (tpu/create_vm.sh) and install (tpu/setup.sh).
  2. Stop a previous run's process group, start CMD detached on all workers
     (tpu/run_all_workers.sh --background RUN: DIR/logs/RUN.{log,pid,rc} on each worker).
  3. Every --poll-seconds, read every worker's status and decide (exit codes: opdlm_jax/errors.py):
       any worker exited 1 (error) or 2 (bad input), or another code below 128
                                   -> stop, exit 1 (a restart would fail the same way)
       any worker exited 75 (preempted, state saved), was killed by a signal (code > 128) or
       vanished, or the VM left READY -> restart from 1 (the trainer resumes from the latest
                                      checkpoint in its workdir: it must live outside the VM,
                                      e.g. a gcsfuse-mounted bucket)
       some still running          -> wait
       every worker exited 0       -> done, exit 0

Options:
  --name NAME               TPU name (required)
  --zone ZONE               zone (required)
  --command CMD             the training command, run in DIR on every worker (required)
  --project PROJECT         GCP project
  --accelerator-type TYPE   for recreation (default v5p-8)
  --version VERSION         TPU software version for recreation (default from the type)
  --spot                    recreate as a Spot VM
  --repo URL | --source DIR where tpu/setup.sh takes the code from after a recreate
  --branch BRANCH           with --repo (default main)
  --mount-bucket B          passed to tpu/setup.sh (gcsfuse mount of gs://B at /gcs/B)
  --dir DIR                 project directory on the workers (default opdlm_jax)
  --env K=V                 exported before CMD (repeatable), e.g. OPDLM_MULTIHOST=1
  --run-name RUN            name of the run's log/pid/rc files (default train)
  --max-restarts N          restarts (preemptions + failures) before giving up (default 20)
  --poll-seconds S          seconds between status checks (default 300)
  --log FILE                append this script's log here (default babysit-NAME.log)
  --dry-run                 print the gcloud commands of one pass (VM missing) and exit
  --worker-status LIST      with --dry-run: print the decision for these worker statuses and exit;
                            LIST is comma-separated, each rc=N, running or dead
                            (e.g. rc=0,rc=75); --name/--zone/--command are not needed
  -h, --help                this help
USAGE
}

NAME="" ZONE="" CMD="" PROJECT="" TYPE="v5p-8" VERSION="" SPOT=0 REPO="" BRANCH="main" SOURCE=""
BUCKET="" DIR="opdlm_jax" RUN_NAME="train" MAX_RESTARTS=20 POLL=300 LOG_FILE="" WORKER_STATUS=""
ENVS=()
while (($#)); do
  case $1 in
    --name) need_value "$1" $#; NAME=$2; shift 2 ;;
    --zone) need_value "$1" $#; ZONE=$2; shift 2 ;;
    --command) need_value "$1" $#; CMD=$2; shift 2 ;;
    --project) need_value "$1" $#; PROJECT=$2; shift 2 ;;
    --accelerator-type) need_value "$1" $#; TYPE=$2; shift 2 ;;
    --version) need_value "$1" $#; VERSION=$2; shift 2 ;;
    --spot) SPOT=1; shift ;;
    --repo) need_value "$1" $#; REPO=$2; shift 2 ;;
    --branch) need_value "$1" $#; BRANCH=$2; shift 2 ;;
    --source) need_value "$1" $#; SOURCE=$2; shift 2 ;;
    --mount-bucket) need_value "$1" $#; BUCKET=$2; shift 2 ;;
    --dir) need_value "$1" $#; DIR=$2; shift 2 ;;
    --env) need_value "$1" $#; ENVS+=("$2"); shift 2 ;;
    --run-name) need_value "$1" $#; RUN_NAME=$2; shift 2 ;;
    --max-restarts) need_value "$1" $#; MAX_RESTARTS=$2; shift 2 ;;
    --poll-seconds) need_value "$1" $#; POLL=$2; shift 2 ;;
    --log) need_value "$1" $#; LOG_FILE=$2; shift 2 ;;
    --dry-run) DRY_RUN=1; shift ;;
    --worker-status) need_value "$1" $#; WORKER_STATUS=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; die "unknown argument: $1" ;;
  esac
done
# The decision for one poll. Input: one line per worker, "<host> rc=<code>", "<host> running" or
# "<host> dead". Output: "done", "wait", "restart: <why>" or "stop: <why>"; a failure anywhere wins
# over a preemption elsewhere (a human should look before the run is restarted).
join() {
  local out="" item
  for item in "$@"; do out+="${out:+; }$item"; done
  printf '%s' "$out"
}

decide() {
  local host code n stop=() restart=() running=0 workers=0
  while read -r host code; do
    [[ -n $host ]] || continue
    workers=$((workers + 1))
    case $code in
      running) running=1 ;;
      rc=0) ;;
      rc=75) restart+=("$host preempted (exit 75)") ;;
      dead) restart+=("$host vanished") ;;
      rc=*)
        n=${code#rc=}
        if [[ $n =~ ^[0-9]+$ ]] && ((n > 128)); then
          restart+=("$host killed by signal $((n - 128)) (exit $n)")
        else
          case $n in 1) n="1 (error)" ;; 2) n="2 (bad input)" ;; esac
          stop+=("$host exit $n")
        fi ;;
      *) restart+=("$host status '$code'") ;;
    esac
  done <<<"$1"
  if ((${#stop[@]})); then echo "stop: $(join "${stop[@]}")"
  elif ((${#restart[@]})); then echo "restart: $(join "${restart[@]}")"
  elif ((workers == 0)); then echo "restart: no worker reported a status"
  elif ((running)); then echo "wait"
  else echo "done"; fi
}

if [[ -n $WORKER_STATUS ]]; then
  ((DRY_RUN)) || die "--worker-status is a --dry-run option"
  lines=""
  i=0
  IFS=, read -ra codes <<<"$WORKER_STATUS"
  for code in "${codes[@]}"; do lines+="worker-$i $code"$'\n'; i=$((i + 1)); done
  decide "$lines"
  exit 0
fi

require --name "$NAME"
require --zone "$ZONE"
require --command "$CMD"
[[ $MAX_RESTARTS =~ ^[0-9]+$ ]] || die "--max-restarts must be a non-negative integer, got '$MAX_RESTARTS'"
[[ $POLL =~ ^[0-9]+$ ]] || die "--poll-seconds must be a non-negative integer, got '$POLL'"
[[ $RUN_NAME =~ ^[A-Za-z0-9_.-]+$ ]] || die "--run-name may hold only letters, digits, _ . -"
if [[ -n $REPO && -n $SOURCE ]]; then die "give --repo or --source, not both"; fi
mapfile -t FLAGS < <(tpu_flags "$ZONE" "$PROJECT")

COMMON=(--name "$NAME" --zone "$ZONE")
if [[ -n $PROJECT ]]; then COMMON+=(--project "$PROJECT"); fi
DRY=()
if ((DRY_RUN)); then DRY=(--dry-run); fi

if ! ((DRY_RUN)); then
  LOG_FILE=${LOG_FILE:-babysit-$NAME.log}
  exec > >(tee -a "$LOG_FILE") 2>&1
fi

vm_state() {
  "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${FLAGS[@]}" --format='value(state)' 2>/dev/null || true
}

# Functions below run in `if` conditions (errexit off there): every step checks its own status.
recreate_vm() {
  local state=$1
  if [[ -n $state ]]; then
    log "TPU $NAME is $state: deleting it"
    run "$GCLOUD" compute tpus tpu-vm delete "$NAME" "${FLAGS[@]}" --quiet || return 1
  fi
  local create=("${COMMON[@]}" --accelerator-type "$TYPE")
  if [[ -n $VERSION ]]; then create+=(--version "$VERSION"); fi
  if ((SPOT)); then create+=(--spot); fi
  "$HERE/create_vm.sh" "${create[@]}" "${DRY[@]}" || return 1
  local setup=("${COMMON[@]}" --dir "$DIR")
  if [[ -n $REPO ]]; then setup+=(--repo "$REPO" --branch "$BRANCH"); fi
  if [[ -n $SOURCE ]]; then setup+=(--source "$SOURCE"); fi
  if [[ -n $BUCKET ]]; then setup+=(--mount-bucket "$BUCKET"); fi
  "$HERE/setup.sh" "${setup[@]}" "${DRY[@]}" || return 1
}

# A READY VM: waits through transitional states, recreates a missing or preempted one.
ensure_vm() {
  local state
  while true; do
    state=$(vm_state)
    case $state in
      READY) return 0 ;;
      "" | PREEMPTED | TERMINATED | STOPPED | SUSPENDED) recreate_vm "$state"; return ;;
      *) log "TPU $NAME is $state; waiting ${POLL}s"; sleep "$POLL" ;;
    esac
  done
}

ssh_all() { tpu_ssh "$NAME" "$ZONE" "$PROJECT" all "$1"; }

stop_run() {
  local pid="logs/$RUN_NAME.pid"
  ssh_all "cd $(shell_quote "$DIR") && if [ -f $pid ]; then kill -- -\$(cat $pid) 2>/dev/null || true; fi"
}

start_run() {
  local args=("${COMMON[@]}" --dir "$DIR" --background "$RUN_NAME")
  local kv
  for kv in "${ENVS[@]}"; do args+=(--env "$kv"); done
  "$HERE/run_all_workers.sh" "${args[@]}" "${DRY[@]}" -- "$CMD"
}

# Prints one line per worker: "<host> rc=<status>", "<host> running" or "<host> dead". Running: the
# process group is alive, or its leader is (just started, before setsid made the group).
poll_run() {
  local f="logs/$RUN_NAME"
  ssh_all "cd $(shell_quote "$DIR") && if [ -f $f.rc ]; then echo \"\$(hostname) rc=\$(cat $f.rc)\"; elif [ -f $f.pid ] && { kill -0 -- -\$(cat $f.pid) || kill -0 \$(cat $f.pid); } 2>/dev/null; then echo \"\$(hostname) running\"; else echo \"\$(hostname) dead\"; fi"
}

if ((DRY_RUN)); then
  run "$GCLOUD" compute tpus tpu-vm describe "$NAME" "${FLAGS[@]}" '--format=value(state)'
  recreate_vm ""
  stop_run
  start_run
  poll_run
  log "dry run: then poll every ${POLL}s; on preemption (exit 75), a kill or a lost VM recreate/restart, at most $MAX_RESTARTS times; stop on exit 1 or 2"
  exit 0
fi

restarts=0
unreachable=0
need_start=1
# Counts one restart, or gives up when they are used up.
restart_or_die() {
  if ((restarts >= MAX_RESTARTS)); then
    die "run $RUN_NAME $1; giving up after $restarts restarts"
  fi
  restarts=$((restarts + 1))
  need_start=1
  log "run $RUN_NAME $1; restart $restarts of $MAX_RESTARTS (resumes from the latest checkpoint)"
}

while true; do
  if ((need_start)); then
    if ensure_vm && { stop_run || true; } && start_run; then
      need_start=0 unreachable=0
      log "run $RUN_NAME started on all workers of $NAME"
    else
      restart_or_die "could not be started (VM creation, setup or launch failed)"
      sleep "$POLL"
      continue
    fi
  fi
  sleep "$POLL"
  if ! status=$(poll_run); then
    state=$(vm_state)
    if [[ $state == READY ]] && ((++unreachable < 3)); then
      log "status check failed while $NAME is READY (try $unreachable of 3); checking again"
      continue
    fi
    restart_or_die "lost (VM ${state:-missing})"
  else
    unreachable=0
    decision=$(decide "$status")
    case $decision in
      done) log "run $RUN_NAME finished on every worker: $(tr '\n' ' ' <<<"$status")"; exit 0 ;;
      wait) log "running: $(tr '\n' ' ' <<<"$status")" ;;
      restart:*) restart_or_die "${decision#restart: }" ;;
      *) die "run $RUN_NAME ${decision}; not restarting (see logs/$RUN_NAME.log on the workers)" ;;
    esac
  fi
done
