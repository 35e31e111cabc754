#!/usr/bin/env bash
# The CUDA checks of one short GPU session, in order of importance, each step under its own time limit so
# that one slow step cannot take the rest down. Logs and JSON go to $OUT (default out/cuda).
#
#   OUT=out/cuda bash bench/cuda_check.sh            # the repo's package on PYTHONPATH, python3 holding torch
#
# Steps: the CUDA tests (pytest -m cuda), `rmtsched verify` in fp32, `rmtsched calibrate --device cuda`
# (timed), `rmtsched compare` with that spec, and bench/bench_cuda.py (diagonal vs sequential per GEMM mode).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; local t0=$SECONDS
         timeout "$limit" "$@"; echo "== rc=$? in $((SECONDS - t0)) s"; }

nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py -c "import torch, simpy, networkx; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
step 50 $py -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_cuda.log"
step 30 $py -m rmtsched verify --model armt-small --seq-len 2048 --device cuda --dtype fp32 \
    | tee "$OUT/verify_fp32.txt"
step 110 $py -m rmtsched calibrate --device cuda --out "$OUT/hw_cuda.json" --report "$OUT/calibrate_report.json" \
    --no-progress 2>&1 | tail -25
for model_tokens in armt-small:4096 armt-llama-160m:8192; do
    step 70 $py -m rmtsched compare --model "${model_tokens%:*}" --seq-len "${model_tokens#*:}" \
        --hardware "$OUT/hw_cuda.json" --device cuda --no-progress | tee -a "$OUT/compare.txt"
done
step 120 $py bench/bench_cuda.py --models armt-small,armt-llama-160m --seq-len 16384 --hardware h200 \
    --json "$OUT/bench_cuda.json"
