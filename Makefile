# labelfleet: the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
export LABELFLEET_HOME ?= $(HOME)/.cache/labelfleet
VENV := $(LABELFLEET_HOME)/venv
# tch builds against the libtorch inside the venv's PyPI torch==2.11.0.
export LIBTORCH_USE_PYTORCH := 1
export PATH := $(VENV)/bin:$(PATH)
CARGO ?= cargo
BIN := target/release/labelfleet

.PHONY: setup setup-tests build run test bench bench-int8-quality bench-quality fmt clippy
# what the main job needs; the tests also need etcd, llama-server and reference outputs
setup:
	@bash scripts/setup.sh
setup-tests:
	@bash scripts/setup.sh --tests

build: setup
	$(CARGO) build --release --bin labelfleet

DATA ?= $(abspath ../shared/data)
run: build
	$(BIN) run --corpus $(DATA)/cranfield/corpus.jsonl --eval-queries $(DATA)/cranfield/queries.tsv \
	  --eval-qrels $(DATA)/cranfield/qrels.txt --out out/run

# the chart (lint, render, Kubernetes schemas), then every Rust test (the Python client's and
# the chat templates' checks against transformers among them)
test: setup-tests
	bash scripts/check_chart.sh
	$(CARGO) test --release --workspace -- --test-threads=1

bench: setup-tests build
	bash scripts/bench_engine.sh
	bash scripts/bench_dispatch.sh

# int8 against fp32 on the human grades: needs the student `make run` writes to out/run/student
bench-int8-quality: build
	bash scripts/bench_int8_quality.sh

# every labeler against Cranfield's human grades, even-numbered queries (not the main job, not
# CI; about 12 minutes on 2 cores): needs the student `make run` writes to out/run/student
bench-quality: build
	python scripts/bench_quality.py

clippy: setup
	$(CARGO) clippy --release --workspace --all-targets
