#!/bin/bash
# Cloud TPU VMs: create, copy the code, run a config on every worker, free, tail, delete.
#
#   launch/tpu.sh create --name egj --zone us-central2-b --type v4-32 [--queued] [--spot]
#   launch/tpu.sh copy   --name egj --zone us-central2-b          # this checkout -> every worker
#   launch/tpu.sh run    --name egj --zone us-central2-b \
#       --config configs/recipe.py:300m --workdir gs://BUCKET/runs/300m [--stage finetune] \
#       [-- --config.train.num_steps=1000]
#   launch/tpu.sh tail   --name egj --zone us-central2-b [--worker 0]
#   launch/tpu.sh free   --name egj --zone us-central2-b          # stale jobs, libtpu lock file
#   launch/tpu.sh delete --name egj --zone us-central2-b [--queued]
#
# Every subcommand takes --dry-run (print the exact gcloud commands, run nothing) and
# --project P. The job runs in a tmux session `egj` on every worker at once, each writing its own
# log ~/egj-logs/<hostname>.log; jax.distributed is initialised by the trainer itself when the
# environment shows a multi-host slice (embeddinggemma_jax.parallel.initialize_distributed), so
# the same command serves a v5e-8 and a v4-256. Multi-host runs need a gs:// workdir: every worker
# writes its checkpoint shards to the same place.
set -euo pipefail
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=launch/common.sh
source "$HERE/common.sh"

usage() {
  sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
  exit "${1:-0}"
}

[[ $# -gt 0 ]] || usage 2
ACTION=$1
shift
NAME=${TPU_NAME:-} ZONE=${TPU_ZONE:-} PROJECT=${TPU_PROJECT:-} TYPE=v5litepod-8
VERSION=${TPU_VERSION:-} QUEUED=0 SPOT=0 REPO="" REF="" WORKER=all
CONFIG="" WORKDIR="" STAGE="" EXTRA=()
# shellcheck disable=SC2016  # expanded by the worker's shell, not here
REMOTE_DIR='$HOME/embeddinggemma-jax'
SESSION=egj
while [[ $# -gt 0 ]]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --name) NAME=$2; shift ;;
    --zone) ZONE=$2; shift ;;
    --project) PROJECT=$2; shift ;;
    --type) TYPE=$2; shift ;;
    --version) VERSION=$2; shift ;;
    --queued) QUEUED=1 ;;
    --spot) SPOT=1 ;;
    --repo) REPO=$2; shift ;;
    --ref) REF=$2; shift ;;
    --worker) WORKER=$2; shift ;;
    --config) CONFIG=$2; shift ;;
    --workdir) WORKDIR=$2; shift ;;
    --stage) STAGE=$2; shift ;;
    -h | --help) usage 0 ;;
    --) shift; EXTRA=("$@"); break ;;
    *) die "$1: unknown option (launch/tpu.sh --help)" ;;
  esac
  shift
done
[[ -n $NAME ]] || die "--name: required (or TPU_NAME)"
[[ -n $ZONE ]] || die "--zone: required (or TPU_ZONE)"

# The runtime image: v4 and v5p use tpu-ubuntu2204-base, v5e/v6e their own.
if [[ -z $VERSION ]]; then
  case $TYPE in
    v5litepod-* | v5e-*) VERSION=v2-alpha-tpuv5-lite ;;
    v6e-*) VERSION=v2-alpha-tpuv6e ;;
    *) VERSION=tpu-ubuntu2204-base ;;
  esac
fi

GLOBAL=(--zone="$ZONE")
[[ -n $PROJECT ]] && GLOBAL+=(--project="$PROJECT")

ssh_all() {  # ssh_all COMMAND: runs COMMAND on the selected worker(s)
  run gcloud compute tpus tpu-vm ssh "$NAME" "${GLOBAL[@]}" --worker="$WORKER" --command="$1"
}

case $ACTION in
  create)
    metadata=()
    [[ -n $REPO ]] && metadata+=(--metadata="egj-repo=$REPO${REF:+,egj-ref=$REF}")
    startup=(--metadata-from-file="startup-script=$HERE/tpu_startup.sh")
    if ((QUEUED)); then
      # A queued resource waits for capacity instead of failing; the node has the same name.
      args=(gcloud compute tpus queued-resources create "$NAME" --node-id="$NAME" "${GLOBAL[@]}"
        --accelerator-type="$TYPE" --runtime-version="$VERSION" "${startup[@]}" "${metadata[@]}")
      ((SPOT)) && args+=(--spot)
      run "${args[@]}"
      echo "# wait until ACTIVE: gcloud compute tpus queued-resources describe $NAME --zone=$ZONE" >&2
    else
      args=(gcloud compute tpus tpu-vm create "$NAME" "${GLOBAL[@]}" --accelerator-type="$TYPE"
        --version="$VERSION" "${startup[@]}" "${metadata[@]}")
      ((SPOT)) && args+=(--spot)
      run "${args[@]}"
    fi
    ;;
  copy)
    # This checkout's committed tree, to every worker, installed with the tpu extra into the venv
    # the startup script made (waiting for it to finish first).
    tarball=${TMPDIR:-/tmp}/egj-code.tar.gz
    run git -C "$HERE/.." archive --format=tar.gz -o "$tarball" HEAD
    run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:egj-code.tar.gz" "${GLOBAL[@]}" --worker=all
    ssh_all "while [ ! -e /opt/egj-ready ]; do sleep 5; done; rm -rf $REMOTE_DIR && mkdir -p $REMOTE_DIR && tar xzf ~/egj-code.tar.gz -C $REMOTE_DIR && /opt/egj-venv/bin/pip install -q -e \"${REMOTE_DIR}[tpu]\""
    ;;
  run)
    [[ $WORKER == all ]] || die "--worker: run starts every worker (a slice runs one program)"
    [[ -z $WORKDIR || $WORKDIR == gs://* ]] ||
      die "--workdir: $WORKDIR: a TPU slice needs a gs:// workdir (each worker has its own disk)"
    job_command "$CONFIG" "$WORKDIR" "$STAGE" "${EXTRA[@]}"
    job=$(quote_all "${JOB[@]}")
    # One tmux session per worker; the log is named after the worker so `tail` can pick one.
    ssh_all "mkdir -p ~/egj-logs && cd $REMOTE_DIR && tmux new-session -d -s $SESSION \"source /opt/egj-venv/bin/activate && $job 2>&1 | tee ~/egj-logs/\$(hostname).log\""
    echo "# follow: launch/tpu.sh tail --name $NAME --zone $ZONE" >&2
    ;;
  tail)
    [[ $WORKER == all ]] && WORKER=0
    ssh_all "tail -n 100 -F ~/egj-logs/\$(hostname).log"
    ;;
  free)
    # A crashed or killed job leaves Python processes holding /dev/accel* (or /dev/vfio on v5e+)
    # and libtpu's lock file; the next job then fails with "TPU in use".
    ssh_all "tmux kill-session -t $SESSION 2>/dev/null; pids=\$(sudo lsof -t /dev/accel* /dev/vfio/* 2>/dev/null | sort -u); [ -n \"\$pids\" ] && sudo kill -9 \$pids; sudo rm -f /tmp/libtpu_lockfile; true"
    ;;
  ssh)
    [[ $WORKER == all ]] && WORKER=0
    run gcloud compute tpus tpu-vm ssh "$NAME" "${GLOBAL[@]}" --worker="$WORKER"
    ;;
  delete)
    if ((QUEUED)); then
      run gcloud compute tpus queued-resources delete "$NAME" "${GLOBAL[@]}" --force --quiet
    else
      run gcloud compute tpus tpu-vm delete "$NAME" "${GLOBAL[@]}" --quiet
    fi
    ;;
  *) die "$ACTION: unknown command (create, copy, run, tail, free, ssh, delete)" ;;
esac
