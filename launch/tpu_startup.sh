#!/bin/bash
# Startup script for every worker of a Cloud TPU VM (passed by `tpu.sh create` as the
# `startup-script` metadata; runs as root at boot). Installs tmux and a venv at /opt/egj-venv with
# the package's `tpu` extra. The code comes from the `egj-repo` metadata (a git URL, optional
# `egj-ref`) when set; otherwise `tpu.sh copy` installs it from your checkout later.
set -euo pipefail

meta() {
  curl -sf -H "Metadata-Flavor: Google" \
    "http://metadata.google.internal/computeMetadata/v1/instance/attributes/$1" || true
}

VENV=/opt/egj-venv
CODE=/opt/embeddinggemma-jax

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q tmux git python3-venv lsof
[[ -x $VENV/bin/python ]] || python3 -m venv "$VENV"
"$VENV/bin/pip" install -q --upgrade pip
chmod -R a+rwX "$VENV"

repo=$(meta egj-repo)
if [[ -n $repo ]]; then
  ref=$(meta egj-ref)
  [[ -d $CODE/.git ]] || git clone "$repo" "$CODE"
  if [[ -n $ref ]]; then git -C "$CODE" checkout "$ref"; fi
  "$VENV/bin/pip" install -q -e "${CODE}[tpu]"
  chmod -R a+rwX "$CODE"
else
  "$VENV/bin/pip" install -q 'jax[tpu]'
fi
touch /opt/egj-ready
