# shellcheck shell=bash
# Shared by the launch scripts: --dry-run printing, quoting, one-line errors.
# Every command a script would run goes through `run`, so `--dry-run` prints exactly what runs.

DRY_RUN=${DRY_RUN:-0}

die() {
  echo "error: $*" >&2
  exit 2
}

# Prints one argument so that a shell reads it back unchanged: plain words as they are, anything
# else in single quotes (readable, unlike printf %q's backslashes).
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_./:=@,+%^-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

quote_all() {
  local first=1 arg
  for arg in "$@"; do
    if ((first)); then first=0; else printf ' '; fi
    quote "$arg"
  done
}

# run CMD ARGS...: prints the command under --dry-run, runs it otherwise.
run() {
  if ((DRY_RUN)); then
    quote_all "$@"
    printf '\n'
  else
    "$@"
  fi
}

# The Python entry point for a config: a recipe stage (`--stage`) or one training run.
# Sets the array JOB.
job_command() {
  local config=$1 workdir=$2 stage=$3
  shift 3
  [[ -n $config ]] || die "--config: required (e.g. configs/recipe.py:300m)"
  [[ -n $workdir ]] || die "--workdir: required (e.g. gs://BUCKET/runs/300m)"
  if [[ -n $stage || $config == *recipe.py* ]]; then
    JOB=(python -m embeddinggemma_jax.recipe "--config=$config" "--workdir=$workdir")
    [[ -n $stage ]] && JOB+=("--stage=$stage")
  else
    JOB=(python -m embeddinggemma_jax.main "--config=$config" "--workdir=$workdir")
  fi
  JOB+=("$@")
}
