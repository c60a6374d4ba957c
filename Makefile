# One place for the project's commands; README and .ci/run call these.
PYTHON ?= python3
DEMO_OUT ?= out/demo

.PHONY: install demo test test-deps lint rust-test py-test bench

install:  ## build the extension (release) and install fastsft
	$(PYTHON) -m pip install .

demo: install  ## prepare the shipped corpora with the shipped Qwen2.5 tokenizer (no network)
	fastsft prep assets/corpora/medicalgpt_sharegpt_zh_1k.jsonl.gz \
		assets/corpora/llamafactory_alpaca_en_demo.jsonl.gz \
		assets/corpora/llamafactory_glaive_toolcall_en_demo.jsonl.gz \
		--tokenizer assets/tokenizers/qwen2.5 -o $(DEMO_OUT) --max-len 4096 --overwrite
	$(PYTHON) -c "import fastsft; ds = fastsft.SFTDataset('$(DEMO_OUT)'); print(len(ds), 'samples;', 'input_ids', ds[0]['input_ids'][:8].tolist(), 'labels', ds[0]['labels'][-8:].tolist())"

test-deps:  ## test dependencies and fastsft itself (editable, release build)
	# torch first: DeepSpeed's pip build imports it.
	$(PYTHON) -m pip install torch==2.15.0
	$(PYTHON) -m pip install -r requirements-test.txt -r requirements-train.txt -r requirements-interop.txt -r requirements-faults.txt
	$(PYTHON) -m pip install -e .

rust-test:  ## without LTO, which is for the wheel: the test build took 531 s instead of 1,880 s (benches/RESULTS.md)
	CARGO_PROFILE_RELEASE_LTO=false cargo test --release

py-test:  ## and the 25 slowest tests, to keep CI's time in view
	$(PYTHON) -m pytest -q --durations=25

LINT_PY = python tests benches examples

lint:  ## clippy (unwrap/expect denied outside tests: rust/lib.rs), ruff (lint and format), mypy; pins in requirements-test.txt
	PYO3_PYTHON=$$(command -v $(PYTHON)) cargo clippy --features python --all-targets -- -D warnings
	$(PYTHON) -m ruff check $(LINT_PY)
	$(PYTHON) -m ruff format --check $(LINT_PY)
	$(PYTHON) -m mypy python/fastsft

test: test-deps lint rust-test py-test  ## everything: install test deps, lints, cargo test, pytest

bench:  ## prep throughput against the Python baselines (see benches/RESULTS.md)
	$(PYTHON) -m pip install -r benches/requirements.txt
	$(PYTHON) benches/bench_prep.py
