# The two set-up commands: `make run` and `make test` bootstrap .venv on a fresh machine.
PY ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run test venv clean bench sysdeps

$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	# torch pinned: 2.13.0 is the CPU build on disk here; a looser spec pulls a multi-GB CUDA build.
	$(VPY) -m pip install -q torch==2.13.0
	$(VPY) -m pip install -q -e '.[cpu,dev]'
	touch $(STAMP)

venv: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/nin-edge pipeline

# The demo's window test needs a virtual display (pip OpenCV's Qt has no offscreen plugin): install Xvfb from
# Debian's packages when we are root and it is missing; elsewhere that one test skips and says why.
sysdeps:
	@command -v Xvfb >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq xvfb >/dev/null) || \
	  echo "note: Xvfb not installed; the demo window test will be skipped"; }

test: $(STAMP) sysdeps
	$(VPY) -m pytest -q

bench: $(STAMP)
	$(VPY) benchmarks/bench_targets.py

clean:
	rm -rf $(VENV) build *.egg-info
