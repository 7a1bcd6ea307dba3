# Two entry points for a fresh machine: `make plan` and `make test`. Each builds its own venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# 2.13.0 is the CPU build on these machines; installing it first keeps pip from pulling a CUDA build
# when the [run] extra asks for torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: plan test lint venv venv-full clean

$(VENV)/.base:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.full: $(VENV)/.base
	$(PY) -m pip show -q torch >/dev/null 2>&1 || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[run,dev]"
	touch $@

venv: $(VENV)/.base
venv-full: $(VENV)/.full

plan: $(VENV)/.base
	$(VENV)/bin/sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k

# Half the suite waits on spawned ranks, timeouts and subprocesses: one worker per core (pytest-xdist),
# each taking whole modules (--dist loadscope), so that a module's process group is spawned once.
test: $(VENV)/.full
	$(PY) -m pytest -q -n auto --dist loadscope
	$(VENV)/bin/sp-validate --check validation/thresholds.yaml

# ruff (pycodestyle + pyflakes, pyproject.toml) and mypy on the package. Not part of `test`: mypy
# takes about half a minute from a cold cache.
lint: $(VENV)/.full
	$(VENV)/bin/ruff check sp_planner tests benchmarks
	$(VENV)/bin/mypy

# The performance budget at scale: search, refusal, plan file, simulator and report, one table
# (benchmarks/scale.py; README "Performance"). BENCH_ARGS=--skip-slow leaves out the 131,072-GPU
# simulation.
.PHONY: bench
BENCH_ARGS ?=
bench: $(VENV)/.base
	$(PY) benchmarks/scale.py $(BENCH_ARGS)

# The cost model against the published runs in validation/ (README "Accuracy").
.PHONY: validate
validate: $(VENV)/.base
	$(VENV)/bin/sp-validate --check validation/thresholds.yaml

# Regenerates the example report in reports/ from the README's example (tests/report/test_example.py).
.PHONY: report
report: $(VENV)/.base
	$(VENV)/bin/sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k --report reports/example

# The GPU path in one short run (scripts/gpu_check.py; README "Proving the GPU path").
# DEVICE=cpu runs the same steps on CPU (CI). Results: a new folder under gpu-check-results/.
DEVICE ?= cuda
GPU_WHEELS ?= gpu-wheels
GPU_CHECK_OUT ?= gpu-check-results/$(shell date -u +%Y%m%dT%H%M%SZ)-$(DEVICE)
# The venv's Python where `make test` built one, else the machine's (the GPU machine has torch).
GPU_CHECK_PYTHON ?= $(if $(wildcard $(PY)),$(PY),$(PYTHON))

.PHONY: gpu-check gpu-wheels
gpu-check:
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --device $(DEVICE) --wheels $(GPU_WHEELS) --out $(GPU_CHECK_OUT)

# Wheels the GPU machine lacks (it has torch, typer, rich, pandas, matplotlib, networkx), for
# CPython 3.12 on x86-64 Linux; fetched where pip reaches PyPI, carried with the checkout.
gpu-wheels:
	$(PYTHON) -m pip download --quiet --only-binary=:all: --python-version 3.12 --implementation cp \
		--platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 --dest $(GPU_WHEELS) \
		"pydantic>=2.6" "PyYAML>=6.0" "pytest>=8" "pytest-timeout>=2.2"

clean:
	rm -rf $(VENV) build *.egg-info .gpu-check-site
