#!/usr/bin/env bash
# One batched GPU session through the device tool: every GPU benchmark of the project in turn.
# Usage (device): bash benchmarks/gpu_run.sh [PART ...]   (parts: kernels embed scale label smoothing linking)
# Needs .whl (faiss-cpu wheel + minilm config/tokenizer) carried; results land in $OUT.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=.:/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
parts=${*:-kernels embed scale label smoothing linking}
step() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -E "Loading weights|Token indices" | tail -40
  echo "=== $name exit ${PIPESTATUS[0]} in $((SECONDS - t0))s"
}
for p in $parts; do
  case $p in
    kernels) step kernels-selfcheck 150 python3 -m kernels.selfcheck --device cuda ;;
    embed) cp -r .whl/minilm /tmp/minilm
           step embed 150 python3 benchmarks/embed.py --device cuda --n 10000 --model-dir /tmp/minilm --random-init ;;
    scale) step scale 240 python3 benchmarks/scale.py --parts index --sizes 1000000,10000000 --kinds flat,ivf,ivfpq --device cuda ;;
    label) step label 120 python3 benchmarks/labeling.py --device cuda --n 10000000 --m 100 ;;
    smoothing) step smoothing 120 python3 benchmarks/smoothing.py --device cuda --n 1000000 ;;
    linking) step linking 150 python3 benchmarks/linking.py --device cuda --n 1000000 ;;
  esac
done
tar czf "$OUT/results.tar.gz" benchmarks/results
