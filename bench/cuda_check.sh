#!/usr/bin/env bash
# Every GPU check in one prepared script (about 7 to 9 minutes on an H200), in order of importance, each step
# under its own time limit so that one slow step cannot take the rest down. Logs and JSON go to $OUT.
#
#   OUT=out/cuda bash bench/cuda_check.sh
#
# It runs the machine's python3 (its own torch and Triton: the project's CPU pins do not apply there) with
# this checkout on PYTHONPATH. The CUDA image has no simpy: copy it into .gpu_deps/ (git-ignored), which
# the device tool must carry; the script puts .gpu_deps on PYTHONPATH:
#   mkdir -p .gpu_deps && cp -r .venv/lib/python3.11/site-packages/simpy .gpu_deps/ && echo /.gpu_deps/ >> .git/info/exclude
# Without a CUDA device it says so and exits 0 (a skip). CALIBRATE=1 adds calibrate + compare (~4 minutes).
#
# Steps:
#   1. pytest -m cuda: CUDA graph replays bit-identical to eager; the Triton grouped GEMM row-invariant on
#      CUDA; every schedule within tolerance; run/calibrate/compare on CUDA
#   2. rmtsched verify, fp32, armt-small: every schedule bit-identical to sequential (grouped GEMM in "auto")
#   3. bench/bench_cuda.py: armt-llama-1b, T 1024, M 128, bf16, 131k then 64k then 32k tokens: full attention,
#      sequential and diagonal (exact and batched), CUDA graphs off and on
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out/cuda}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD:$PWD/.gpu_deps${PYTHONPATH:+:$PYTHONPATH}"
py=${PYTHON:-python3}
step() { local limit=$1; shift; echo "== $* (limit ${limit}s)"; local t0=$SECONDS
         timeout "$limit" "$@"; local rc=$?; echo "== rc=$rc in $((SECONDS - t0)) s"; return 0; }

if ! $py -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" 2>/dev/null; then
    echo "cuda_check.sh: skipped, $py's torch sees no CUDA device (or does not import)"
    exit 0
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
$py - <<'EOF' 2>&1 | tee "$OUT/env.txt"
import importlib.util, torch
print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name())
for name in ("triton", "simpy", "networkx", "hypothesis", "safetensors", "tqdm"):
    spec = importlib.util.find_spec(name)
    version = getattr(__import__(name), "__version__", "?") if spec else "MISSING"
    print(f"{name} {version}")
EOF

step 200 $py -m pytest -q -m cuda -p no:cacheprovider tests 2>&1 | tee "$OUT/pytest_cuda.log"
step 60 $py -m rmtsched verify --model armt-small --seq-len 2048 --device cuda --dtype fp32 2>&1 \
    | tee "$OUT/verify_fp32.txt"
step 300 $py bench/bench_cuda.py --model armt-llama-1b --seq-lens 131072,65536,32768 --segment-len 1024 \
    --mem-tokens 128 --dtype bf16 --repeats 2 --budget-s 240 --hardware h200 --json "$OUT/bench_cuda.json" 2>&1 \
    | tee "$OUT/bench_cuda.log"

if [[ "${CALIBRATE:-0}" == 1 ]]; then
    step 110 $py -m rmtsched calibrate --device cuda --out "$OUT/hw_cuda.json" --report "$OUT/calibrate_report.json" \
        --no-progress 2>&1 | tail -25
    for model_tokens in armt-small:4096 armt-llama-160m:8192; do
        step 70 $py -m rmtsched compare --model "${model_tokens%:*}" --seq-len "${model_tokens#*:}" \
            --hardware "$OUT/hw_cuda.json" --device cuda --no-progress | tee -a "$OUT/compare.txt"
    done
fi
