#!/usr/bin/env bash
# On a GPU machine (run from the repository root, with .gpu-wheels and .gpu-carry carried; see
# bench/gpu_prepare.sh): bench/gpu_check.py first (engine against model.generate, one RL step of each recipe on a
# 1.5B shape, the small demo with GPU memory per stage; gpu_check.json rewritten after each part), then the whole
# suite on 8 workers. Everything small lands in $OUT; models and runs go to /tmp.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
PYTHON=${PYTHON:-python3}
mkdir -p "$OUT"
SITE=/tmp/rftt-gpu-site
"$PYTHON" -m pip install --quiet --no-deps --target "$SITE" .gpu-wheels/*.whl 2>&1 | tail -3
"$PYTHON" -m pip install --quiet --no-deps --no-build-isolation --target "$SITE" .gpu-wheels/pycosat-*.tar.gz 2>&1 | tail -3
export PYTHONPATH=$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH} HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv"
"$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$OUT/versions.txt"
started=$(date +%s)
timeout 330 "$PYTHON" bench/gpu_check.py --tokenizer .gpu-carry/smollm2 --out "$OUT" > "$OUT/gpu_check.log" 2>&1
echo "gpu_check exit $? after $(( $(date +%s) - started )) s" | tee -a "$OUT/gpu_check.log"
grep -E "^\{'(batch|recipe)'" "$OUT/gpu_check.log"
timeout 200 "$PYTHON" -m pytest -q -v -p no:cacheprovider -n 8 tests > "$OUT/suite.txt" 2>&1
echo "suite exit $? after $(( $(date +%s) - started )) s" | tee -a "$OUT/suite.txt"
grep -E "on_the_gpu|beyond_the_machine|auto_device" "$OUT/suite.txt" > "$OUT/gpu_only_tests.txt"
grep -E "FAILED|ERROR" "$OUT/suite.txt" | head -30
tail -3 "$OUT/suite.txt"
