# Two entry points for a fresh machine: `make plan` and `make test`. Each builds its own venv.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# 2.13.0 is the CPU build on these machines; installing it first keeps pip from pulling a CUDA build
# when the [run] extra asks for torch.
TORCH_SPEC ?= torch==2.13.0

.PHONY: plan test venv venv-full clean

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

test: $(VENV)/.full
	$(PY) -m pytest -q
	$(VENV)/bin/sp-validate --check validation/thresholds.yaml

# The cost model against the published runs in validation/ (README "Accuracy").
.PHONY: validate
validate: $(VENV)/.base
	$(VENV)/bin/sp-validate --check validation/thresholds.yaml

# Regenerates the example report in reports/ from the README's example (tests/report/test_example.py).
.PHONY: report
report: $(VENV)/.base
	$(VENV)/bin/sp-plan --model llama3-8b --hardware a800 --nodes 2 --seq-len 128k --report reports/example

clean:
	rm -rf $(VENV) build *.egg-info
