#!/usr/bin/env bash
# One device call: GPU kernel check, then the encode and train benchmarks (ours vs the peer, same
# process, same card). Needs .assets/tok/ (the checkpoint's tokenizer files: tokenizer.model, tokenizer.json, ...) carried.
set -u
export XLA_PYTHON_CLIENT_PREALLOCATE=false  # the peer shares the card
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD
OUT=${OUT:-/tmp/out}
mkdir -p "$OUT"
nvidia-smi -L
python3 -c "import jax, flax, torch, sentence_transformers as st; print('jax', jax.__version__, 'flax', flax.__version__, 'torch', torch.__version__, 'st', st.__version__, jax.devices())"
# If the cuDNN path fails here, benchmark with the XLA kernels instead (and say so).
ATT=auto
timeout 60 python3 bench/gpu_check.py 2>&1 | tee "$OUT/gpu_check.txt"
[ "${PIPESTATUS[0]}" = 0 ] || ATT=xla
echo "attention for the benchmarks: $ATT"
# Limits sum to 540 s (one device command may run 600 s); every script prints and writes its JSON
# row by row, so a step cut off by its limit keeps what it measured.
timeout 180 python3 bench/train.py --scan-layers --attention $ATT --shapes 64x256,128x128 \
  --grad-cache-overhead --json "$OUT/train.json" 2>&1 | tee "$OUT/train.txt"
timeout 180 python3 bench/embed.py --device gpu --random-weights /tmp/eg300m --tokenizer .assets/tok \
  --attention $ATT --batch-size 128 --fixed 128:2048,512:512 --n-mixed 512 --json "$OUT/embed.json" 2>&1 | tee "$OUT/embed.txt"
timeout 120 python3 bench/train.py --scan-layers --attention $ATT --no-peer --max-batch-search \
  --search-seconds 100 --json "$OUT/train_max.json" 2>&1 | tee "$OUT/train_max.txt"
