# The two set-up commands of README.md: `make demo` and `make test`. Each builds .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench bench-quick clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev,dask,tokenizers,hf]'
	touch $(STAMP)

# The whole chain on the shipped corpus in one command (count tokens, this machine's profile: measured on the first
# run, then reused from the user cache; choose the design, export it, one HTML report). Each stage's artifact stays
# in out/ under a fixed name, so any stage can be re-run alone with its own verb.
demo: $(STAMP)
	$(BIN)/vocabopt plan corpora/kjv.txt --tokenizer corpora/kjv-bpe-8k/tokenizer.json --hidden 512 -o out
	@echo "demo done: out/stats.json, out/device.json, out/plan.json, out/adaptive_head.py, out/report.html"

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)  # exit code 5 = no slow tests collected yet
	$(BIN)/python -m pytest -q -m slow || [ $$? -eq 5 ]

# Style gate (CI runs it before the tests): ruff's linter and formatter, 120 columns (pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check vocabopt tests benchmarks
	$(BIN)/ruff format --check vocabopt tests benchmarks

# Regenerates docs/benchmarks.md: every script whose figures README.md and docs/ quote (benchmarks/README.md maps
# each figure to its script and section). ~1.5 h on a 2-core CPU (2026-11-29: 83 min, tune_corpora ~36 min,
# expand_replan ~7, validate_kjv ~5, the machine's profile ~10 the first time, ...). Run it on a quiet machine, from a
# clone of its own (edits in a working checkout would reach scripts not yet started). The cost-model check always
# uses this machine's profile (measured here, cached); the optimizer, validate and tune use PROFILE: on another
# machine than the shipped profile's, pass your own, `make bench PROFILE=out/bench-device.json`.
PROFILE ?= configs/devices/cpu-xeon-2core-float32.json
bench: $(STAMP)
	$(BIN)/python benchmarks/analyze_throughput.py
	$(BIN)/python benchmarks/analyze_scale.py
	$(BIN)/python benchmarks/analyze_dask.py
	$(BIN)/python benchmarks/layer_speed.py --quick
	mkdir -p out && $(BIN)/vocabopt profile -q -o out/bench-device.json
	$(BIN)/python benchmarks/cost_model_fidelity.py --profile out/bench-device.json --profile $(PROFILE)
	$(BIN)/python benchmarks/optimizer_speed.py --profile $(PROFILE)
	$(BIN)/python benchmarks/plan_vs_folklore.py --profile $(PROFILE)
	$(BIN)/python benchmarks/validate_kjv.py --profile $(PROFILE)
	$(BIN)/python benchmarks/proxy_noise.py --profile $(PROFILE)
	$(BIN)/python benchmarks/tune_corpora.py --profile $(PROFILE)
	$(BIN)/python benchmarks/expand_replan.py --profile $(PROFILE)
	$(BIN)/python benchmarks/decode_latency.py --quick --docs
	$(BIN)/python benchmarks/convert_head.py --docs
	$(BIN)/python benchmarks/quantize_head.py --docs

# A sanity run of the same scripts with their quick/smoke options (minutes); writes nothing (--no-write, and
# decode_latency without --docs). analyze_scale, analyze_dask and validate_kjv have no quick mode and are left out.
bench-quick: $(STAMP)
	$(BIN)/python benchmarks/analyze_throughput.py --quick --no-write
	$(BIN)/python benchmarks/layer_speed.py --quick --reps 3 --no-write
	$(BIN)/python benchmarks/cost_model_fidelity.py --profile $(PROFILE) --quick --no-write
	$(BIN)/python benchmarks/optimizer_speed.py --profile $(PROFILE) --quick --no-write
	$(BIN)/python benchmarks/plan_vs_folklore.py --profile $(PROFILE) --quick --no-write
	$(BIN)/python benchmarks/proxy_noise.py --profile $(PROFILE) --corpus kjv --steps 16 --seeds 2 --no-write
	$(BIN)/python benchmarks/tune_corpora.py --profile $(PROFILE) --corpus kjv --steps 40 --seeds 1 --no-write
	$(BIN)/python benchmarks/expand_replan.py --profile $(PROFILE) --quick --no-write
	$(BIN)/python benchmarks/decode_latency.py --shapes 8192:256 --batch 1 --reps 1
	$(BIN)/python benchmarks/convert_head.py --quick
	$(BIN)/python benchmarks/quantize_head.py --quick

clean:
	rm -rf $(VENV) out
