#!/usr/bin/env bash
# One batched GPU session through the device tool: every GPU benchmark of the project in turn.
# Usage (device): bash benchmarks/gpu_run.sh [PART ...]   (parts: kernels embed scale label smoothing linking)
# Needs .whl (faiss-cpu wheel + minilm config/tokenizer) carried; results land in $OUT.
set -u
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=true
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=.:/tmp/site
nvidia-smi --query-gpu=name,memory.total --format=csv | tee "$OUT/gpu.txt"
# MiniLM's config and tokenizer travel without weights: fill in seeded random weights
# (speed does not depend on the values) and make it the default model of every benchmark.
cp -r .whl/minilm /tmp/minilm && python3 -c "
import sys; sys.path.insert(0, '.'); from pathlib import Path
from benchmarks.embed import prepare_random_model; prepare_random_model(Path('/tmp/minilm'))"
export LOOM_EMBED_MODEL=/tmp/minilm
parts=${*:-kernels embed label smoothing linking scale}
step() {  # name, seconds, command...
  local name=$1 limit=$2; shift 2
  echo "=== $name (limit ${limit}s)"; local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | grep -v -E "Loading weights|Token indices" | tee -a "$OUT/log.txt" | tail -25
  echo "=== $name exit ${PIPESTATUS[0]} in $((SECONDS - t0))s" | tee -a "$OUT/log.txt"
  tar czf "$OUT/results.tar.gz" benchmarks/results
}
for p in $parts; do
  case $p in
    kernels) step kernels-selfcheck 240 bash -c "python3 -m kernels.selfcheck --device cuda | tee benchmarks/results/kernels-selfcheck-gpu.jsonl" ;;
    embed) step embed 60 python3 benchmarks/embed.py --device cuda --n 10000 --model-dir /tmp/minilm --random-init ;;
    label) step label 100 python3 benchmarks/labeling.py --device cuda --n 10000000 --m 100 --skip-quality --skip-applier --tag gpu ;;
    smoothing) step smoothing 170 python3 benchmarks/smoothing.py --part speed --device cuda --n 1000000 ;;
    linking) step linking 180 python3 benchmarks/linking.py --device cuda --speed-n 1000000 --skip link,dedup,train,peers ;;
    scale) step scale-1M 120 python3 benchmarks/scale.py --parts index --sizes 1000000 --kinds flat,ivf,ivfpq --device cuda --tag 1M
           # 10M: exact truth from torch on the GPU, the IVF-PQ build runs on the CPU (no faiss-gpu)
           step scale-10M 420 python3 benchmarks/scale.py --parts index --sizes 10000000 --kinds ivfpq --device cuda --tag 10M ;;
  esac
done
tar czf "$OUT/results.tar.gz" benchmarks/results
