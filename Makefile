# One command for everything: `make test` sets up what it needs on a fresh machine
# (venv + Python packages, kube-apiserver/etcd built once into ~/.cache, Prometheus) and then
# runs lint, type checks and all tests.
SHELL := bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test lint unit integration deps venv kube-binaries aigw-controller prometheus cluster bench clean
.PHONY: image helm-binary image-tools

# The main job: a whole canary rollout on this machine (SCENARIO=healthy|bad-canary|
# slow-canary|no-traffic|gateway-rejects).
SCENARIO ?= healthy
demo: venv kube-binaries aigw-controller prometheus
	$(BIN)/rollout demo --scenario $(SCENARIO)

test: deps lint
	$(BIN)/pytest -q -ra

lint: venv
	$(BIN)/ruff check rollout tests bench
	$(BIN)/ruff format --check rollout tests bench
	$(BIN)/mypy

unit: venv
	$(BIN)/pytest -q tests/unit

integration: deps
	$(BIN)/pytest -q tests/integration

deps: venv kube-binaries aigw-controller prometheus helm-binary image-tools chromium

venv: $(STAMP)
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 is needed, found " + sys.version' 
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

kube-binaries:
	@bash scripts/kube-binaries.sh >/dev/null

# The upstream Envoy AI Gateway controller v1.1.0, built once from ../shared/ai-gateway/src.
aigw-controller:
	@bash scripts/aigw-controller.sh >/dev/null

prometheus:
	@bash scripts/install-prometheus.sh

# helm built from its Go module once into ~/.cache (ROLLOUT_HELM_BIN: use yours instead).
helm-binary:
	@bash scripts/helm-binary.sh >/dev/null

# Debian's chromium for the dashboard's browser tests (driven by Playwright, no download).
.PHONY: chromium
chromium:
	@bash scripts/install-chromium.sh

# podman, runc and debootstrap (Debian's packages) for the image test.
image-tools:
	@bash scripts/install-image-tools.sh

# The controller image, with podman or docker: make image [BASE=<python image>] [IMAGE=<tag>]
image: venv
	@BASE='$(BASE)' IMAGE='$(IMAGE)' bash scripts/image-build.sh

# Starts the local control plane with the upstream CRDs; Ctrl-C stops it.
cluster: venv kube-binaries aigw-controller
	$(BIN)/rollout cluster start --ai-gateway --kubeconfig $(CURDIR)/.kubeconfig

bench: deps
	$(BIN)/python bench/controlplane_startup.py
	$(BIN)/python bench/weights_update.py
	$(BIN)/python bench/analysis_queries.py
	$(BIN)/python bench/controller_ticks.py
	$(BIN)/python bench/run_at_scale.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
