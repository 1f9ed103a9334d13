# Developer entry points. `make test` and `make demo` work from a fresh clone on Debian/Ubuntu
# with Python 3.11: scripts/bootstrap.sh creates .venv and installs Prometheus through apt.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: help bootstrap kube-bins test test-emulator test-fast lock demo lint typecheck crds docs model train bench bench-detection bench-backtest bench-scale bench-scale-real bench-shards bench-series-cap bench-compression bench-models e2e clean

help:
	@echo "make demo      - local sandbox: real Prometheus + emulated Kubernetes API + vigil run"
	@echo "make test      - the test suite (real Prometheus, emulated and real Kubernetes API, moto)"
	@echo "make kube-bins - build the real kube-apiserver/etcd the tests run (cached outside the clone)"
	@echo "make test-fast - only the tests that need no peer (pytest -m 'not slow'): no Prometheus needed"
	@echo "make test-emulator - the suite with the API emulator under the kubeapi tests (fast local loop)"
	@echo "make lock      - refresh requirements/dev.lock and runtime.lock from pyproject.toml (UPGRADE=1: newest allowed)"
	@echo "make lint      - ruff + mypy"
	@echo "make crds      - regenerate crds/ and the chart's CRDs from the pydantic models"
	@echo "make model     - retrain the built-in model, then the detection benchmark (card + docs/bench/detection.md)"
	@echo "make train     - alias of make model"
	@echo "make bench-detection - detection benchmark only (needs ../shared/data/nab)"
	@echo "make bench     - benchmarks (detection quality needs ../shared/data/nab)"
	@echo "make bench-scale - scale sweep N=1000, 2000, 10000 detectors with full windows (~110 min, ~10 GB RAM for promtool): docs/bench/scale.{md,png,json}, README"
	@echo "make bench-scale-real - the scale bench at N=2000 (N=...) against a real kube-apiserver + etcd: docs/bench/scale-real.{md,png,json}"
	@echo "make bench-series-cap - RSS of one 20,000-series detector, capped and uncapped (~2 min): docs/security.md"
	@echo "make bench-shards - one replica vs 2 shards + standbys, N=1000 (~6 min): docs/bench/shards.md"
	@echo "make bench-compression - Prometheus' and the operator's CPU per query with and without gzip (~2 min): bench/README.md"
	@echo "make bench-models - hostile custom models vs vigil run, and the code before the guard (~4 min): docs/bench/models.md"
	@echo "make dashboard-screenshots - docs/img/dashboard-*.png from the dashboard's browser-test scene"
	@echo "make docs      - regenerate docs/configuration.md from charts/vigil/values.yaml"
	@echo "make e2e       - kind end-to-end test (needs Docker, kind, helm, kubectl)"

bootstrap:
	@bash scripts/bootstrap.sh dev

# Before pytest: a cold build (~13 min) would not fit in the first real-server test's timeout.
# JOBS pytest-xdist workers (whole test files each, so a module's Prometheus starts once), each with its own
# real API server, moto and port range; then the suite-wide RBAC check alone, on every worker's audit log
# (VIGIL_AUDIT_DIR). Both always run; the target fails if either did. JOBS=0: one process, no xdist.
JOBS ?= 2
AUDIT_DIR := $(abspath .pytest-audit)
test: bootstrap kube-bins
	@rm -rf $(AUDIT_DIR) && mkdir -p $(AUDIT_DIR)
	@status=0; \
	VIGIL_AUDIT_DIR=$(AUDIT_DIR) $(PY) -m pytest -n $(JOBS) --dist loadfile --durations=25 -m "not suite_last" \
	  || status=$$?; \
	VIGIL_AUDIT_DIR=$(AUDIT_DIR) $(PY) -m pytest -p no:xdist -m suite_last -rs tests/security/test_suite_rbac.py \
	  || status=$$?; \
	rm -rf $(AUDIT_DIR); exit $$status

# The same suite with the API emulator under the `kubeapi` tests instead of the real kube-apiserver.
test-emulator: bootstrap kube-bins
	VIGIL_TEST_KUBE=emulator $(PY) -m pytest

# kube-apiserver, kubectl and etcd for tests/realkube.py, built from Go modules and cached by version.
kube-bins:
	@bash scripts/kube-bins.sh >/dev/null

# The pure tests (api, domain, features, adapters without peers): the `slow` ones are those that start
# Prometheus, moto, the API emulator or `vigil run` (tests/conftest.py marks them), so no Prometheus here.
test-fast:
	@bash scripts/bootstrap.sh dev --no-prometheus
	$(PY) -m pytest -m "not slow"

# Not behind bootstrap: after a pyproject.toml edit the old lock may no longer install. uv comes from
# the venv ([dev] pins it) or PATH; uv keeps the locked versions unless UPGRADE=1.
lock:
	$(if $(wildcard $(PY)),$(PY),python3) scripts/lock.py $(if $(UPGRADE),--upgrade)

demo: bootstrap
	$(PY) -m vigil_sandbox.demo $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

typecheck: lint

crds: bootstrap
	$(VENV)/bin/vigil crds -o crds
	$(PY) scripts/sync-chart-crds.py

docs: bootstrap
	$(PY) scripts/values-table.py --write docs/configuration.md
	$(PY) scripts/sync-bench-docs.py --write
	$(PY) scripts/tested-against.py --write

model: bootstrap
	nice -n 10 $(PY) -m model.train
	nice -n 10 $(PY) -m bench.detection

train: model

bench-detection: bootstrap
	nice -n 10 $(PY) -m bench.detection

bench: bootstrap
	$(PY) bench/inference.py
	$(PY) -m bench.detection
	$(PY) bench/backtest.py

bench-backtest: bootstrap
	$(PY) bench/backtest.py --write docs/bench/backtest.md

# Real Prometheus + API emulator + `vigil run`; one command, unattended, non-zero exit on harness failure.
bench-scale: bootstrap
	$(PY) -m bench.scale --history 2016
	$(PY) scripts/sync-bench-docs.py --write

# The same against a real kube-apiserver + etcd (tests/realkube.py): writes from its audit log, its and etcd's cost.
bench-scale-real: N ?= 2000
bench-scale-real: bootstrap kube-bins
	$(PY) -m bench.scale --kube real -n $(N)

# One replica, then K shards each with a standby, then a failover: same peers as bench-scale.
bench-shards: bootstrap
	$(PY) -m bench.shards --output docs/bench/shards.md

# Issue 11 item 6: one over-broad detector against real Prometheus + API emulator + `vigil run`.
bench-series-cap: bootstrap
	nice -n 10 $(PY) -m bench.series_cap --uncapped

# Prometheus' and the operator's CPU per range query, gzip against none, in one run.
bench-compression: bootstrap
	$(PY) -m bench.compression

# Issue 11 items 2, 5: operator RSS and /healthz latency under hostile custom models, with the code
# before the guard (28909cd^, from `git archive`) as the baseline of the same run.
GUARD_BASELINE = 28909cd^
bench-models: bootstrap
	tmp=$$(mktemp -d) && git archive $(GUARD_BASELINE) operator | tar -x -C $$tmp && \
	nice -n 10 $(PY) -m bench.models --baseline $$tmp/operator --baseline-label "$(GUARD_BASELINE)" \
		--output docs/bench/models.md; status=$$?; rm -rf $$tmp; exit $$status
	$(PY) scripts/sync-bench-docs.py --write

e2e:
	bash scripts/e2e.sh

# Screenshots of `vigil dashboard` (docs/img/dashboard-*.png) from the browser tests' own scene: a real
# kube-apiserver, headless Chromium (Debian chromium + chromium-driver).
.PHONY: dashboard-screenshots
dashboard-screenshots: bootstrap kube-bins
	$(PY) scripts/dashboard-screenshots.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .pytest-audit demo-out
