# Shared helpers of the tpu/ scripts (sourced, not run).
# shellcheck shell=bash

# 1 after --dry-run: gcloud commands are printed (one per line, shell-quoted) instead of run.
DRY_RUN=${DRY_RUN:-0}
GCLOUD=${GCLOUD:-gcloud}

log() {
  printf '[%s] %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

die() {
  log "error: $*"
  exit 1
}

# Quote one word for a shell only when it needs it, so dry-run output stays readable.
shell_quote() {
  local word=$1
  if [[ -n $word && $word =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
    printf '%s' "$word"
  else
    printf "'%s'" "${word//\'/\'\\\'\'}"
  fi
}

print_command() {
  local first=1 word
  for word in "$@"; do
    if ((first)); then first=0; else printf ' '; fi
    shell_quote "$word"
  done
  printf '\n'
}

# Run a command, or print it under --dry-run.
run() {
  if ((DRY_RUN)); then
    print_command "$@"
  else
    log "+ $(print_command "$@")"
    "$@"
  fi
}

# The common gcloud flags of a TPU VM: --zone and, when given, --project.
tpu_flags() {
  local zone=$1 project=$2
  printf '%s\n' "--zone=$zone"
  if [[ -n $project ]]; then printf '%s\n' "--project=$project"; fi
}

# tpu_ssh NAME ZONE PROJECT WORKER COMMAND: run COMMAND on the given worker(s) ("all", 0, 1, ...).
tpu_ssh() {
  local name=$1 zone=$2 project=$3 worker=$4 command=$5
  local -a flags
  mapfile -t flags < <(tpu_flags "$zone" "$project")
  run "$GCLOUD" compute tpus tpu-vm ssh "$name" "${flags[@]}" "--worker=$worker" "--command=$command"
}

# The TPU VM software version that goes with an accelerator type (override with --version).
default_runtime_version() {
  case $1 in
    v6e-*) echo v2-alpha-tpuv6e ;;
    v5p-*) echo v2-alpha-tpuv5 ;;
    v5litepod-* | v5e-*) echo v2-alpha-tpuv5-lite ;;
    v4-*) echo tpu-ubuntu2204-base ;;
    *) die "no default --version for accelerator type '$1'; pass --version" ;;
  esac
}

require() {
  local flag=$1 value=$2
  [[ -n $value ]] || die "$flag is required (see --help)"
}

# Reads the value of an option that takes one; fails clearly when it is missing.
need_value() {
  local flag=$1 count=$2
  ((count >= 2)) || die "$flag needs a value"
}
