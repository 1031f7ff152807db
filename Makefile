# The two set-up commands of README.md: `make demo` and `make test`. Each builds .venv and installs what it needs.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint bench clean

$(STAMP): pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt torch==2.13.0
	$(BIN)/pip install -q -c constraints.txt -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p out
	$(BIN)/vocabopt analyze corpora/kjv.txt --tokenizer corpora/kjv-bpe-8k/tokenizer.json \
		-o out/kjv-stats.json --plot out/kjv-rank.png

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

lint: $(STAMP)
	$(BIN)/ruff check vocabopt tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/analyze_throughput.py

clean:
	rm -rf $(VENV) out
