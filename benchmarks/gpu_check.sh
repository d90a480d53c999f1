#!/usr/bin/env bash
# The prepared one-GPU check of issue 17: QLoRA r=256 at EEVE's width (2 and 4 layers) against the
# dry-run memory estimate, and kofin's DPO recipe (training/dpo_recipe.py) through unsloth and TRL on
# a stacked r=256 adapter. Writes benchmarks/results/gpu-<date>.json. Under 8 minutes on one H200.
#
#   bash benchmarks/gpu_check.sh prepare               # CPU box, kofin's env: tokenizer, pairs, wheels -> runs/gpu-carry
#   bash benchmarks/gpu_check.sh run                   # GPU host (python 3.12, torch+cu130, transformers, peft, accelerate)
#   bash benchmarks/gpu_check.sh run --toy --device cpu --python .venv/bin/python --no-install   # CPU rehearsal, toy width
#
# run options: --carry DIR (runs/gpu-carry)  --python PY (python3)  --results DIR (benchmarks/results)
#              --no-install (use PY's packages as they are)  --timeout S (460)  and any of check.py's:
#              --toy --device --layers --steps --seq-len --r --dpo-steps --skip --unsloth-python
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
usage() { sed -n '2,13p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; }

[ $# -ge 1 ] || { usage >&2; exit 2; }
cmd="$1"; shift
CARRY="$ROOT/runs/gpu-carry"
PY=python3
RESULTS="$ROOT/benchmarks/results"
INSTALL=1
TIMEOUT=460
PASS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --carry) CARRY="$2"; shift 2 ;;
    --python) PY="$2"; shift 2 ;;
    --results) RESULTS="$2"; shift 2 ;;
    --no-install) INSTALL=0; shift ;;
    --timeout) TIMEOUT="$2"; shift 2 ;;
    --toy) PASS+=("$1"); shift ;;
    --device|--layers|--steps|--seq-len|--r|--dpo-steps|--dpo-max-length|--skip|--unsloth-python)
      [ $# -ge 2 ] || { echo "gpu_check.sh: $1 needs a value" >&2; exit 2; }
      PASS+=("$1" "$2"); shift 2 ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

case "$cmd" in
  prepare)
    KOFIN="${KOFIN:-$ROOT/.venv/bin/kofin}"
    KPY="${KPY:-$ROOT/.venv/bin/python}"
    rm -rf "$CARRY" && mkdir -p "$CARRY/tokenizer" "$CARRY/wheels"
    tiny="$("$KOFIN" tiny path | tail -1)"
    for f in tokenizer.json tokenizer_config.json chat_template.jinja special_tokens_map.json; do
      [ -f "$tiny/$f" ] && cp "$tiny/$f" "$CARRY/tokenizer/"
    done
    "$KOFIN" data build --config "$ROOT/configs/data/tiny.yaml" "output_dir=$CARRY/.data" --quiet >/dev/null
    cp "$CARRY/.data/dpo/train.jsonl" "$CARRY/pairs.jsonl" && rm -rf "$CARRY/.data"
    "$KPY" "$ROOT/benchmarks/gpu/wheels.py" download "$CARRY/wheels"
    for w in "$CARRY"/wheels/bitsandbytes-*.whl; do "$KPY" "$ROOT/benchmarks/gpu/wheels.py" trim-bnb "$w"; done
    "$KPY" "$ROOT/benchmarks/gpu/wheels.py" needs "$CARRY/wheels"
    "$KPY" "$ROOT/benchmarks/gpu/wheels.py" size "$CARRY"
    echo "prepared $CARRY; on the GPU host: bash benchmarks/gpu_check.sh run"
    ;;
  run)
    [ -f "$CARRY/pairs.jsonl" ] && [ -d "$CARRY/tokenizer" ] || {
      echo "gpu_check.sh: $CARRY has no pairs.jsonl / tokenizer/; run 'bash benchmarks/gpu_check.sh prepare' first" >&2; exit 2; }
    WORK="$(mktemp -d /tmp/kofin-gpu-check.XXXXXX)"
    if [ "$INSTALL" = 1 ]; then
      # The host's torch/transformers/peft/accelerate stay; the carried wheels add the DPO stage's. Not a
      # venv: the host's python3 is itself a venv, and a venv made from it sees the base interpreter's
      # site-packages, not the one holding torch. PYTHONPATH reaches the DPO subprocesses too.
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$WORK/site" "$CARRY"/wheels/*.whl
      export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
    fi
    "$PY" -c "import torch, transformers, peft, accelerate, bitsandbytes, datasets, trl" || {
      echo "gpu_check.sh: $PY lacks a package the check needs (see above); add its wheel to the carry" >&2; exit 3; }
    has_unsloth_py=0
    for a in "${PASS[@]}"; do [ "$a" = --unsloth-python ] && has_unsloth_py=1; done
    [ "$has_unsloth_py" = 1 ] || PASS+=(--unsloth-python "$PY")
    mkdir -p "$RESULTS"
    out="$RESULTS/gpu-$(date -u +%Y-%m-%d).json"
    export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 UNSLOTH_DISABLE_STATISTICS=1 \
      DO_NOT_TRACK=1 WANDB_MODE=disabled TOKENIZERS_PARALLELISM=false PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
    # check.py rewrites the record after each part, so a timeout still leaves what was measured.
    rc=0
    timeout "$TIMEOUT" "$PY" "$ROOT/benchmarks/gpu/check.py" --tokenizer "$CARRY/tokenizer" --pairs "$CARRY/pairs.jsonl" \
      --work "$WORK/check" --out "$out" "${PASS[@]}" || rc=$?
    [ -f "$out" ] || { echo "gpu_check.sh: check.py wrote no record (exit $rc)" >&2; exit "${rc/#0/1}"; }
    if [ -n "${OUT:-}" ]; then cp "$out" "$OUT/"; fi
    echo "wrote $out (check.py exit $rc)"
    exit "$rc"
    ;;
  *) usage >&2; exit 2 ;;
esac
