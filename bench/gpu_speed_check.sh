#!/usr/bin/env bash
# TuneForge vs TRL+PEFT on one CUDA GPU, in ONE device call of ~8 minutes (bench/README.md, "GPU speed").
#
#   bash bench/gpu_speed_check.sh            # from the repository root; results under $OUT (default /tmp/gpu-speed)
#
# Runs bench/vs_peers.py's speed sweep on randomly initialised models of three shapes (the stand-in's
# 135M, Llama 3.2 1B, Llama 3.1 8B), each at the dataset's rows (~74 tokens, batch 8) and at rows of
# ~1,024 tokens, for TuneForge with the shared-prefix pass on and off and TRL's fast and default
# configurations: tok/s, MFU against the bf16 matmul peak measured in the same run, peak GPU memory
# and host RSS. One vs_peers invocation per shape, each under its own time limit, so a slow or
# out-of-memory 8B run cannot take the smaller shapes' figures with it; each writes
# $OUT/<shape>/results.{json,md} (results.json after every run, so a killed invocation keeps what ran).
#
# Needs (the device's image has torch 2.11+cu130, transformers and peft; the venv does not travel):
#   - python3 with a CUDA build of torch, transformers, peft, trl 1.16.0, datasets 5.2.0 (+ dill,
#     multiprocess): whatever is missing goes as wheels in bench/wheels/*.whl (carried), installed
#     here with pip --no-index into /tmp/site;
#   - bench/wheels/like/: config.json, tokenizer*.json and chat_template.jinja of the stand-in (its
#     shape and tokenizer; ~2 MB), since the stand-in's GGUF does not travel. bench/README.md says how
#     to make both.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/gpu-speed}
PY=${PYTHON:-python3}
LIKE=${LIKE:-bench/wheels/like}
mkdir -p "$OUT"
LOG="$OUT/log.txt"
exec > >(tee -a "$LOG") 2>&1

if compgen -G "bench/wheels/*.whl" >/dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site bench/wheels/*.whl || {
    echo "gpu_speed_check: installing bench/wheels/*.whl failed (see above)"
    exit 2
  }
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
"$PY" - <<'EOF' || exit 2
import importlib, sys
missing = []
for name in ("torch", "transformers", "peft", "trl", "datasets", "safetensors"):
    try:
        importlib.import_module(name)
    except Exception as err:  # noqa: BLE001 - any import failure means: bring that wheel
        missing.append(f"{name} ({type(err).__name__}: {err})")
if missing:
    sys.exit("gpu_speed_check: missing Python packages: " + "; ".join(missing) + ". Carry their wheels in bench/wheels/ (bench/README.md).")
import torch
if not torch.cuda.is_available():
    sys.exit(f"gpu_speed_check: torch {torch.__version__} sees no CUDA GPU; this check needs one.")
print(f"gpu_speed_check: torch {torch.__version__}, {torch.cuda.get_device_name()}")
EOF
if [ ! -f "$LIKE/config.json" ] || ! compgen -G "$LIKE/tokenizer*" >/dev/null; then
  echo "gpu_speed_check: $LIKE must hold the stand-in's config.json and tokenizer files (bench/README.md, GPU speed)"
  exit 2
fi

export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
# 120 rows -> 96 train / 24 validation: 12 LoRA steps of 8 per run, 1 epoch; LoRA is the method whose
# GPU ratio was worst (0.63-0.70x). The limits add up to ~8 minutes; the 8B one is the largest.
run_shape() {
  local shape=$1 limit=$2
  echo "=== $shape (limit ${limit}s) ==="
  timeout "$limit" "$PY" bench/vs_peers.py --device cuda --weights "$LIKE" --shapes "$shape" --row-tokens 0,1024 \
    --shared-prefix on,off --methods lora --epochs 1 --examples 120 --wait 0 --keep-going --out "$OUT/$shape"
  echo "=== $shape: exit $? ==="
}
run_shape smollm2-135m 120
run_shape llama-1b 130
run_shape llama-8b 230
nvidia-smi --query-gpu=name,memory.total,clocks.max.sm --format=csv >>"$LOG" 2>&1 || true
ls -R "$OUT"
