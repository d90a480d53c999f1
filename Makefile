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
EXTRAS ?= model,train,rag,merge,eval,serve,fedlora,dev
comma  := ,
STAMP  := $(VENV)/.kofin-$(subst $(comma),-,$(EXTRAS))
# The SFT stage runs axolotl in its own env: axolotl pins transformers/trl/peft versions that
# cannot co-install with the app env (see training/axolotl-requirements.txt, the exact lock).
AXOLOTL_VENV ?= .venv-axolotl
AXOLOTL_LOCK := training/axolotl-requirements.txt
AXOLOTL_STAMP := $(AXOLOTL_VENV)/.kofin-axolotl
AXOLOTL_VERSION ?= 0.19.0
# DPO with unsloth runs in its own env too: unsloth pins trl<=1.15 and transformers<=5.17, below the
# app env's (see training/unsloth-requirements.txt). It builds and pip-checks on CPU; unsloth itself
# only imports where CUDA is present. UNSLOTH_TORCH_SPEC must satisfy the lock's torch<2.15.
# On CPU the lock's torchvision (PyPI has only its CUDA build for torch 2.13) cannot load its
# operators, so transformers' Trainer does not import in this env there; nothing on CPU needs it.
UNSLOTH_VENV ?= .venv-unsloth
UNSLOTH_LOCK := training/unsloth-requirements.txt
UNSLOTH_STAMP := $(UNSLOTH_VENV)/.kofin-unsloth
UNSLOTH_VERSION ?= 2026.10.9
UNSLOTH_TORCH_SPEC ?= $(TORCH_SPEC)

.PHONY: install axolotl-env axolotl-lock unsloth-env unsloth-lock browser slapd demo ruff typecheck lint test clean help

help:
	@echo "make demo   run every built stage on the embedded tiny model and bundled Korean data"
	@echo "make test   ruff, mypy, then the test suite (CPU, offline; GPU tests are skipped without a GPU)"
	@echo "make lint   only ruff check, ruff format --check and mypy (config: pyproject.toml)"
	@echo "make axolotl-env  create .venv-axolotl, the pinned env kofin sft runs axolotl in (make demo/test do it)"
	@echo "make unsloth-env  create .venv-unsloth, the pinned env kofin dpo runs unsloth in (make demo/test do it)"
	@echo "make browser  install Debian's chromium for the chat's browser test (make test does it)"
	@echo "make slapd  install Debian's slapd for the directory sign-on test (make test does it)"
	@echo "make clean  remove runs/ and test scratch (keeps the virtual env)"

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -q -e ".[$(EXTRAS)]"
	@touch $@

install: $(STAMP)

$(AXOLOTL_STAMP): $(AXOLOTL_LOCK)
	@test -x $(AXOLOTL_VENV)/bin/python || $(PYTHON) -m venv $(AXOLOTL_VENV)
	$(AXOLOTL_VENV)/bin/python -m pip install -q --upgrade pip
	$(AXOLOTL_VENV)/bin/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(AXOLOTL_VENV)/bin/python -m pip install -q -r $(AXOLOTL_LOCK)
	@touch $@

axolotl-env: $(AXOLOTL_STAMP)

# Re-pin after changing the axolotl version: installs it fresh and writes the full freeze.
axolotl-lock:
	rm -rf $(AXOLOTL_VENV).lock-tmp && $(PYTHON) -m venv $(AXOLOTL_VENV).lock-tmp
	$(AXOLOTL_VENV).lock-tmp/bin/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(AXOLOTL_VENV).lock-tmp/bin/python -m pip install -q "axolotl==$(AXOLOTL_VERSION)"
	{ sed -n '1,4p' $(AXOLOTL_LOCK); $(AXOLOTL_VENV).lock-tmp/bin/pip freeze | grep -v '^torch=='; } > $(AXOLOTL_LOCK).new
	mv $(AXOLOTL_LOCK).new $(AXOLOTL_LOCK) && rm -rf $(AXOLOTL_VENV).lock-tmp

$(UNSLOTH_STAMP): $(UNSLOTH_LOCK)
	@test -x $(UNSLOTH_VENV)/bin/python || $(PYTHON) -m venv $(UNSLOTH_VENV)
	$(UNSLOTH_VENV)/bin/python -m pip install -q --upgrade pip
	$(UNSLOTH_VENV)/bin/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(UNSLOTH_TORCH_SPEC)"
	$(UNSLOTH_VENV)/bin/python -m pip install -q -r $(UNSLOTH_LOCK)
	$(UNSLOTH_VENV)/bin/python -m pip check
	@touch $@

unsloth-env: $(UNSLOTH_STAMP)

# Re-pin after changing the unsloth version: resolves it fresh over torch and writes the full freeze.
unsloth-lock:
	rm -rf $(UNSLOTH_VENV).lock-tmp && $(PYTHON) -m venv $(UNSLOTH_VENV).lock-tmp
	$(UNSLOTH_VENV).lock-tmp/bin/python -m pip install -q $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(UNSLOTH_TORCH_SPEC)"
	$(UNSLOTH_VENV).lock-tmp/bin/python -m pip install -q "unsloth==$(UNSLOTH_VERSION)" "unsloth_zoo==$(UNSLOTH_VERSION)"
	{ sed -n '1,5p' $(UNSLOTH_LOCK); $(UNSLOTH_VENV).lock-tmp/bin/pip freeze | grep -v '^torch=='; } > $(UNSLOTH_LOCK).new
	mv $(UNSLOTH_LOCK).new $(UNSLOTH_LOCK) && rm -rf $(UNSLOTH_VENV).lock-tmp

# The chat's browser test drives Debian's Chromium through Playwright's API (never a browser
# downloaded by `playwright install`); installed once per machine, with sudo where not root.
CHROMIUM ?= /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

browser:
	@test -x $(CHROMIUM) || { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium; }
	@test -x $(CHROMIUM) || { echo "$(CHROMIUM) still missing after apt-get install chromium"; exit 1; }

# Directory sign-on is tested against a real OpenLDAP server (Debian's slapd), started by the
# test on 127.0.0.1 in a scratch folder; the package's own system service is never used.
SLAPD ?= /usr/sbin/slapd

slapd:
	@test -x $(SLAPD) || { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -q && $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slapd ldap-utils; }
	@test -x $(SLAPD) || { echo "$(SLAPD) still missing after apt-get install slapd"; exit 1; }

demo: $(STAMP) $(AXOLOTL_STAMP) $(UNSLOTH_STAMP)
	@echo "== 1/9 embedded tiny EEVE-shaped model"
	$(BIN)/kofin tiny path
	@echo "== 2/9 Korean SFT + DPO data from the bundled knowledge base (reading comprehension, PII scrub, dedupe)"
	$(BIN)/kofin data build --config configs/data/tiny.yaml
	@echo "== 3/9 validate the built SFT data against the tiny tokenizer"
	$(BIN)/kofin data validate runs/data-tiny/sft/train.jsonl --kind sft
	@echo "== 4/9 domain SFT through axolotl (LoRA on the tiny model, CPU); the EEVE recipe's plan, without weights"
	$(BIN)/kofin sft --config configs/sft/tiny.yaml --quiet
	$(BIN)/kofin sft --config configs/sft/eeve_qlora_r256_8xh100.yaml --dry-run
	@echo "== 5/9 DPO on top of the SFT adapter (TRL; unsloth where CUDA is present)"
	$(BIN)/kofin dpo --config configs/dpo/tiny.yaml --quiet
	@echo "== 6/9 merge the DPO model with a second tiny model through mergekit (slerp with per-layer t), checked"
	$(BIN)/kofin merge --config configs/merge/tiny.yaml
	@echo "== 7/9 knowledge base from the bundled documents, then a cited answer"
	$(BIN)/kofin ingest --kb runs/kb-demo data_ko/kb
	$(BIN)/kofin ask --kb runs/kb-demo "정기예금을 만기 전에 해지하면 이자는 어떻게 되나요?"
	@echo "== 8/9 eval pack: the tiny base vs. the merged model (MCQ, classification, QA, RAG, forgetting) -> runs/eval-pipeline-tiny/report.html"
	$(BIN)/kofin eval --config configs/eval/pipeline_tiny.yaml --quiet
	@echo "== the same stages as one pipeline: every step is up to date, so each is skipped"
	$(BIN)/kofin pipeline --config configs/pipeline/tiny.yaml --quiet
	@echo "== 9/9 chat app: the bundled knowledge base behind a login, on http://127.0.0.1:7860 (Ctrl+C stops it)"
	@echo "   demo logins (user / password):  teller / teller-demo-1 (창구, branch)   compliance / comply-demo-1 (준법감시)   admin / admin-demo-1 (관리자: 문서 관리)"
	@echo "   every answer is logged to runs/serve-demo/audit.jsonl; check it with: $(BIN)/kofin audit verify runs/serve-demo/audit.jsonl"
	$(BIN)/kofin serve --config configs/serve/demo.yaml

# Lint and type-check (issue 15). Both are clean over the tree and run first in `make test`, in
# this order: ruff (seconds), mypy (45-100 s cold on 2 busy cores, a few warm; cache in .mypy_cache/), then the
# suite, so a style or type error fails before the tests start. Both come with the dev extra, pinned.
ruff: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

lint: ruff typecheck

test: $(STAMP) $(AXOLOTL_STAMP) $(UNSLOTH_STAMP) browser slapd ruff typecheck
	$(BIN)/python -m pytest -q

clean:
	rm -rf runs
