#!/usr/bin/env bash
# The restoration benchmark in one command (<= 8 min on one GPU, no Ray): both networks
# trained on the GPU for a time budget each (the "gpu" recipe: the reference's sizes, batch 16 at
# 128²), the baselines tuned on training photographs, everything scored on the 20 held-out frames.
#
# Run from the repository root on any CUDA machine with the pinned torch (pip install torch==2.13.0)
# and pip install -e '.[dev]'. It needs the photograph set (degtrans simulate make-photos) in PHOTOS
# (default: where make-photos writes it). Logs and results go to OUT as they are written, so a run
# stopped at its limit still leaves them.
#
#   OUT=/tmp/out bash benchmarks/restore_gpu.sh    # BUDGET: s per network, LIMIT: s for the whole
#   EXTRA="--patches-per-image 1 --scales fit" ...  # more benchmark flags (a quick CPU check)
set -u
OUT=${OUT:-benchmarks/results/restore-gpu}
PHOTOS=${PHOTOS:-${DEGTRANS_PHOTOS:-$HOME/.cache/degtrans/photos}}
BUDGET=${BUDGET:-100}
LIMIT=${LIMIT:-450}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv; "$PYTHON" -c \
    "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"; } \
    > "$OUT/device.txt" 2>&1
timeout "$LIMIT" "$PYTHON" benchmarks/restore.py --recipe gpu --photos "$PHOTOS" \
    --time-budget "$BUDGET" --steps 100000 --eval-every 0 --no-wiener-best \
    --threads "$(nproc)" --workers "$(( $(nproc) > 2 ? $(nproc) - 2 : 1 ))" \
    --output "$OUT/restore_gpu.json" ${EXTRA:-} > "$OUT/restore_gpu.log" 2>&1
status=$?
echo "exit status $status" >> "$OUT/restore_gpu.log"
exit "$status"
