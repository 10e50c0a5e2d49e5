# Berth: run as root on Debian 12.
#   make demo          set up, start berthd if needed, `berth run --rm busybox` (offline)
#   make test          set up (with the peer clients), then the whole test suite
#   make demo-runtime  set up, then run a busybox bundle with berth-runtime alone
#   make bench         berth-runtime against runc, side by side
SHELL := /bin/bash
VENV := $(CURDIR)/.venv
PY := $(VENV)/bin/python
DEMO := $(CURDIR)/.demo
PYTEST_ARGS ?=
BENCH_ARGS ?=

.PHONY: setup demo demo-runtime test bench clean

setup:
	@bash scripts/setup.sh

demo: setup
	@bash scripts/demo.sh

demo-runtime: setup
	@$(PY) scripts/make_demo_bundle.py $(DEMO)/bundle
	@mkdir -p -m 700 $(DEMO)/state
	$(VENV)/bin/berth-runtime --root $(DEMO)/state run --bundle $(DEMO)/bundle demo-$$$$

test:
	@bash scripts/setup.sh --with-peers
	$(PY) -m pytest -q --timeout=300 $(PYTEST_ARGS)

bench: setup
	$(PY) benchmarks/bench_runtime.py $(BENCH_ARGS)

clean:
	rm -rf $(DEMO) .pytest_cache
