# The README's two commands: `make test` and `make demo`. Both build .venv on a fresh machine.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: test demo venv lint clean chromium gpu-check

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: on this CPU machine it is the wheel on disk; on a CUDA machine the same pin takes the CUDA build.
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP) chromium
	$(BIN)/python -m pytest

# The report test renders the demo page in Debian's chromium: install it when it is missing and apt-get
# exists (without it that one test is skipped).
chromium:
	@if [ ! -x /usr/bin/chromium ] && command -v apt-get >/dev/null 2>&1; then \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y chromium) \
		|| echo "could not install chromium: the headless-browser test will be skipped"; \
	fi

# Everything that needs a GPU in one run (<= 8 min on one GPU): GPU tests, Triton benchmark, GPU
# synthesis vs CPU, training speed; one summary table in benchmarks/results/gpu-check/. Without CUDA it
# says so and exits 0.
gpu-check: $(STAMP)
	$(BIN)/python benchmarks/gpu_check.py

demo: $(STAMP)
	$(BIN)/degtrans demo -o demo

lint: $(STAMP)
	$(BIN)/ruff check degtrans tests benchmarks

clean:
	rm -rf $(VENV) demo
