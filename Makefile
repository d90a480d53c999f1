# kofin — the two quick-start commands (`make demo`, `make test`) and what they need.
# Each target creates the virtual env it needs; nothing is installed by hand.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Torch first, for the platform: this pin takes the local CPU wheel on CPU machines and the
# CUDA build from the registry on GPU hosts. Override e.g. TORCH_SPEC="torch==2.13.0+cu128".
TORCH_SPEC ?= torch==2.13.0
# Where no local CPU wheel is configured and no GPU is present, point pip at a CPU-only index
# (a local mirror in an air-gapped bank), e.g. TORCH_INDEX=https://mirror.bank/torch-cpu/simple
TORCH_INDEX ?=
EXTRAS ?= model,rag,dev
comma  := ,
STAMP  := $(VENV)/.kofin-$(subst $(comma),-,$(EXTRAS))

.PHONY: install demo test clean help

help:
	@echo "make demo   run every built stage on the embedded tiny model and bundled Korean data"
	@echo "make test   run the test suite (CPU, offline; GPU tests are skipped without a GPU)"
	@echo "make clean  remove runs/ and test scratch (keeps the virtual env)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

demo: $(STAMP)
	@echo "== 1/4 embedded tiny EEVE-shaped model"
	$(BIN)/kofin tiny path
	@echo "== 2/4 Korean SFT + DPO data from the bundled knowledge base (reading comprehension, PII scrub, dedupe)"
	$(BIN)/kofin data build --config configs/data/tiny.yaml
	@echo "== 3/4 validate the built SFT data against the tiny tokenizer"
	$(BIN)/kofin data validate runs/data-tiny/sft/train.jsonl --kind sft
	@echo "== 4/4 knowledge base from the bundled documents, then a cited answer"
	$(BIN)/kofin ingest --kb runs/kb-demo data_ko/kb
	$(BIN)/kofin ask --kb runs/kb-demo "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?"
	@echo
	@echo "Not built yet (each says so when called): kofin sft, dpo, merge, eval, serve, pipeline."

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs
