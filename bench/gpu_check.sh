#!/usr/bin/env bash
# On a GPU machine (run from the repository root, with .gpu-wheels and .gpu-carry carried; see
# bench/gpu_prepare.sh): the whole suite, then bench/gpu_check.py (engine against model.generate, one RL step of
# each recipe on a 1.5B shape, the small demo with GPU memory per stage). Everything lands in $OUT.
set -uo pipefail
OUT=${OUT:-/tmp/gpu-check}
mkdir -p "$OUT"
SITE=$PWD/.gpu-site
python -m pip install --quiet --no-deps --target "$SITE" .gpu-wheels/*.whl 2>&1 | tail -3
python -m pip install --quiet --no-deps --no-build-isolation --target "$SITE" .gpu-wheels/pycosat-*.tar.gz 2>&1 | tail -3
export PYTHONPATH=$PWD/src:$SITE${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > "$OUT/gpu.csv"
python -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__)" \
  | tee "$OUT/versions.txt"
started=$(date +%s)
python -m pytest -q -p no:cacheprovider -n 8 tests > "$OUT/suite.txt" 2>&1
echo "suite exit $? in $(( $(date +%s) - started )) s" | tee -a "$OUT/suite.txt"
tail -5 "$OUT/suite.txt"
python -m pytest -q -p no:cacheprovider tests/test_rl.py -k gpu > "$OUT/gpu_only_tests.txt" 2>&1
tail -2 "$OUT/gpu_only_tests.txt"
python bench/gpu_check.py --tokenizer .gpu-carry/smollm2 --out "$OUT" > "$OUT/gpu_check.log" 2>&1
echo "gpu_check exit $? after $(( $(date +%s) - started )) s"
tail -40 "$OUT/gpu_check.log"
rm -rf "$OUT/work"
