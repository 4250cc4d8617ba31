#!/usr/bin/env bash
# Timings on a GPU machine, in a few minutes: the runtimes of the model stage (posts/s per GPU,
# torch fp32 / bf16 / fp16 autocast, ONNX Runtime where onnxruntime-gpu is installed), the
# Ray pipeline with the model on the GPU, and the GPU's utilisation while it runs.
#
#   bash bench/gpu.sh [OUT_DIR]          # figures in OUT_DIR/gpu.txt (default: $OUT or out/gpu)
#
# Run from the repository root on a machine with CUDA and a CUDA build of torch (the CPU wheel of
# scripts/setup.sh cannot see a GPU: `pip install -e .` beside your own torch). Nothing here is
# needed by CI or the tests.
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-out/gpu}}"
mkdir -p "$out"
py="${PYTHON:-python}"
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && py=.venv/bin/python
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 TOKENIZERS_PARALLELISM=false
{
  echo "# $(date -u +%FT%TZ) $(hostname)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "no nvidia-smi"
  "$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
} | tee "$out/gpu.txt"

# GPU utilisation sampled every second while the benchmarks run
nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$out/utilisation.csv" 2>/dev/null &
smi=$!
trap 'kill $smi 2>/dev/null' EXIT

# 1. the model stage alone, per precision (batches of 128 posts, as a model actor gets them)
timeout 240 "$py" - <<'EOF' 2>&1 | tee -a "$out/gpu.txt"
import statistics, time, torch
from mmsent.predictor import ModelRunner
from mmsent.preprocess import Preprocessor
from mmsent.sample_data import real_photos
from mmsent.train.default_model import splits

texts = [t for t in splits()[2].texts if t][:2048]
photos = [b for _, b in real_photos(max_side=None)] or [None]
for precision in ("fp32", "bf16", "fp16"):
    try:
        runner = ModelRunner(None, "cuda", "torch", precision)
    except Exception as e:  # e.g. no bf16 on this GPU
        print(f"torch {precision}: {e}")
        continue
    pre = Preprocessor(runner.cfg)
    for kind, imgs in (("text", [None] * len(texts)), ("text+image", [photos[i % len(photos)] for i in range(len(texts))])):
        batches = [pre(texts[i:i + 128], imgs[i:i + 128]) for i in range(0, len(texts), 128)]
        runner(dict(batches[0]))
        runs = []
        for _ in range(3):
            torch.cuda.synchronize(); t = time.perf_counter()
            for b in batches:
                runner(dict(b))
            torch.cuda.synchronize(); runs.append(time.perf_counter() - t)
        print(f"torch {precision:4s} {kind:10s} {len(texts) / statistics.median(runs):8.1f} posts/s per GPU (model stage)", flush=True)
try:
    from mmsent.models.runtime import onnx_cuda
    if onnx_cuda():
        runner = ModelRunner(None, runtime="onnx", precision="fp32")
        pre = Preprocessor(runner.cfg)
        batches = [pre(texts[i:i + 128]) for i in range(0, len(texts), 128)]
        runner(dict(batches[0])); t = time.perf_counter()
        for b in batches:
            runner(dict(b))
        print(f"onnx fp32 (CUDA EP) text {len(texts) / (time.perf_counter() - t):8.1f} posts/s")
    else:
        print("onnx: no CUDAExecutionProvider (install onnxruntime-gpu in place of onnxruntime)")
except Exception as e:
    print(f"onnx: {e}")
EOF

# 2. the whole pipeline with the model on the GPU (two actors share it), text+image
timeout 300 "$py" bench/pipeline.py --seconds 40 --mem-posts 0 \
  --set model_num_gpus=0.5 runtime=torch precision=auto 2>&1 | tail -25 | tee -a "$out/gpu.txt"

kill $smi 2>/dev/null
awk -F', ' 'NR > 1 { gsub(/ %/, "", $2); s += $2; n++; if ($2 > m) m = $2 } END { if (n) printf "GPU utilisation: mean %.0f %%, max %d %% over %d s\n", s / n, m, n }' \
  "$out/utilisation.csv" | tee -a "$out/gpu.txt"
