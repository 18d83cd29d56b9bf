#!/bin/bash
# One machine with one or more GPUs: one process drives every local GPU (the mesh spans them), so
# no jax.distributed is involved.
#
#   launch/gpu.sh [--setup] [--gpus 0,1,2,3] --config configs/recipe.py:300m --workdir runs/300m \
#       [--stage finetune] [--log runs/300m.log] [--dry-run] [-- --config.key=value ...]
#
# --setup creates .venv with the package's `cuda` extra first. --dry-run prints the commands.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/common.sh
source "$HERE/common.sh"

SETUP=0 GPUS="" CONFIG="" WORKDIR="" STAGE="" LOG="" EXTRA=()
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --setup) SETUP=1 ;;
    --gpus) GPUS=$2; shift ;;
    --config) CONFIG=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    --stage) STAGE=$2; shift ;;
    --log) LOG=$2; shift ;;
    -h | --help) sed -n '2,9p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "$1: unknown option (launch/gpu.sh --help)" ;;
  esac
  shift
done

ROOT=$(cd "$HERE/.." && pwd)
VENV=$ROOT/.venv
if ((SETUP)); then
  run python3 -m venv "$VENV"
  run "$VENV/bin/pip" install -q -e "${ROOT}[cuda]"
fi
job_command "$CONFIG" "$WORKDIR" "$STAGE" "${EXTRA[@]}"
JOB[0]=$VENV/bin/python
# XLA preallocates 75% of each GPU by default; the trainer wants most of it.
envs=(env XLA_PYTHON_CLIENT_MEM_FRACTION=0.9)
[[ -n $GPUS ]] && envs+=("CUDA_VISIBLE_DEVICES=$GPUS")
if [[ -n $LOG ]]; then
  if ((DRY_RUN)); then
    printf '%s 2>&1 | tee %s\n' "$(quote_all "${envs[@]}" "${JOB[@]}")" "$(quote "$LOG")"
  else
    mkdir -p "$(dirname "$LOG")"
    "${envs[@]}" "${JOB[@]}" 2>&1 | tee "$LOG"
  fi
else
  run "${envs[@]}" "${JOB[@]}"
fi
