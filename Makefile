# `make run` and `make test` each set up what they need (the venv, the pinned stack, the demo
# data and a tiny model) and then do their job. Nothing is downloaded at run time.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
ORCH := $(VENV)/bin/orch
STAMP := $(VENV)/.stamp-stack
TINY := models/tiny-qwen2.5-vl
DEMO := data/demo
PIP := $(PY) -m pip install --quiet --disable-pip-version-check
LMMS_VENV := .venv-lmms
LMMS_STAMP := $(LMMS_VENV)/.stamp-lmms
LMMS_PIP := $(LMMS_VENV)/bin/python -m pip install --quiet --disable-pip-version-check

.PHONY: setup run test lint bench clean
setup: $(STAMP)

# torch first, pinned, with pip, so that it takes the CPU wheel on this machine's disk and never
# a multi-GB CUDA build (uv does not look there); then the stack with uv, which keeps that torch
# and installs the same versions as pip in 33 s instead of 93 (--compile-bytecode: this machine
# sets PYTHONDONTWRITEBYTECODE=1, so without .pyc files every process would compile torch's and
# transformers' sources again, +7 s of CPU each); then DeepSpeed built with its shm op (else the
# first run JIT-compiles it for ~30 s), with pip, whose cache keeps the built wheel.
$(STAMP): requirements/stack.txt requirements/dev.txt pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) --upgrade pip
	$(PIP) torch==2.13.0
	$(PIP) uv==0.13.9
	$(VENV)/bin/uv pip install --quiet --compile-bytecode --python $(PY) \
		-r requirements/stack.txt -r requirements/dev.txt
	DS_BUILD_SHM_COMM=1 $(PIP) --no-build-isolation --no-deps deepspeed==0.19.8
	$(PIP) --no-deps -e .
	touch $@

$(TINY)/config.json: $(STAMP) workers/models/tiny.py
	$(ORCH) model tiny --out $(TINY)

$(DEMO)/COMPLETE: $(STAMP) workers/data/demo.py workers/data/demo_bench.py
	$(ORCH) data demo --out $(DEMO)
	touch $@

run: $(STAMP) $(TINY)/config.json $(DEMO)/COMPLETE
	$(ORCH) submit jobs/demo_mix.toml
	$(ORCH) results

# pytest exits 5 when it collects no test; make fails on it like on any failure. The lmms-eval
# environment is built first: its tests fail, rather than skip, without it (ORCH_REQUIRE_LMMS).
# Tests run on every core (pytest-xdist), a whole module per worker: a module's fixtures (the
# local SLURM, a Ray head) start once, and the session fixtures at most once per worker. The
# modules are handed out in the order tests/conftest.py gives them (the longest first).
XDIST := -n logical --maxprocesses 4 --dist loadscope --no-loadscope-reorder
# The two environments are independent: they build side by side (-j2).
test:
	$(MAKE) --no-print-directory -j2 $(STAMP) $(LMMS_STAMP)
	ORCH_REQUIRE_LMMS=1 $(PY) -m pytest -q -ra --timeout=900 --durations=15 $(XDIST)

# Everything but the slow, e2e and slurm tests (no Ray Train or DeepSpeed run): a few minutes.
.PHONY: test-fast
test-fast: $(STAMP)
	$(PY) -m pytest -q -ra --timeout=900 --durations=15 $(XDIST) -m "not slow and not e2e and not slurm"

# Benchmarks print name=value lines; each compares against a baseline measured in the same run.
# orch_eval_vs_lmms runs lmms-eval in its own venv: make bench builds it (make lmms) first.
bench: $(STAMP) $(TINY)/config.json $(DEMO)/COMPLETE $(LMMS_STAMP)
	PYTHONPATH=. $(PY) bench/controller_1000x50.py
	PYTHONPATH=. $(PY) bench/eval_latency.py
	PYTHONPATH=. $(PY) bench/eval_grouping.py
	PYTHONPATH=. $(PY) bench/ckpt_block.py
	PYTHONPATH=. $(PY) bench/loader_vs_decode.py
	PYTHONPATH=. $(PY) bench/packing.py
	PYTHONPATH=. $(PY) bench/stream_rss.py
	PYTHONPATH=. $(PY) bench/train_rss.py
	PYTHONPATH=. $(PY) bench/train_pack_fill.py
	PYTHONPATH=. $(PY) bench/orch_vs_handwritten.py
	PYTHONPATH=. $(PY) bench/orch_eval_vs_lmms.py
	PYTHONPATH=. $(PY) bench/lmms_part_overhead.py
	PYTHONPATH=. $(PY) bench/plan_error.py
	@if $(PY) -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then \
		PYTHONPATH=. $(PY) bench/gpu_mfu.py --compile; \
	else echo "gpu_mfu: skipped (no CUDA device)"; fi

# Every benchmark's --quick mode (small sizes: it checks that each runs to its end and prints its
# figures; gpu_mfu's runs a tiny model, on the CPU without CUDA). tests/test_bench.py runs the same.
.PHONY: bench-quick
bench-quick: $(STAMP) $(TINY)/config.json $(DEMO)/COMPLETE $(LMMS_STAMP)
	PYTHONPATH=. $(PY) bench/controller_1000x50.py --quick
	PYTHONPATH=. $(PY) bench/eval_latency.py --quick
	PYTHONPATH=. $(PY) bench/eval_grouping.py --quick
	PYTHONPATH=. $(PY) bench/ckpt_block.py --quick
	PYTHONPATH=. $(PY) bench/loader_vs_decode.py --quick
	PYTHONPATH=. $(PY) bench/packing.py --quick
	PYTHONPATH=. $(PY) bench/stream_rss.py --quick
	PYTHONPATH=. $(PY) bench/train_rss.py --quick
	PYTHONPATH=. $(PY) bench/train_pack_fill.py --quick
	PYTHONPATH=. $(PY) bench/orch_vs_handwritten.py --quick
	PYTHONPATH=. $(PY) bench/orch_eval_vs_lmms.py --quick
	PYTHONPATH=. $(PY) bench/lmms_part_overhead.py --quick
	PYTHONPATH=. $(PY) bench/plan_error.py --quick
	PYTHONPATH=. $(PY) bench/gpu_mfu.py --quick

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

clean:
	rm -rf runs $(TINY) $(DEMO)

# lmms-eval 0.7.3 in a venv of its own (it pins wandb 0.25, orch 0.31): what
# tests/golden/make_lmms_metric_cases.py runs under, and what tests/test_lmms_metrics.py checks
# orch's metrics against when it is there. torch first, pinned, as for $(VENV).

.PHONY: lmms
lmms: $(LMMS_STAMP)

$(LMMS_STAMP): requirements/lmms.txt pyproject.toml
	test -x $(LMMS_VENV)/bin/python || python3 -m venv $(LMMS_VENV)
	$(LMMS_PIP) --upgrade pip
	$(LMMS_PIP) torch==2.13.0
	$(LMMS_PIP) -r requirements/lmms.txt
	# PyPI's torchvision (a CUDA build, pulled in by lmms-eval) fails to import beside torch's
	# CPU build and breaks transformers' processors; nothing here uses it (lmms-eval imports it
	# only in video and detection tasks).
	$(LMMS_VENV)/bin/python -m pip uninstall --yes --quiet torchvision
	$(LMMS_PIP) --no-deps -e .
	touch $@
