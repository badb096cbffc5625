#!/usr/bin/env bash
# Issue 18, for the day a GPU is lent: DiT motion-feature capture at NATIVE size on one GPU,
# chunked (the library) versus naive (full attention map), on the real Wan2.1-T2V-1.3B
# (81 x 480 x 832 -> 21 x 60 x 104 latents, blocks 0..14) and CogVideoX-2b (49 x 480 x 720 ->
# 13 x 60 x 90 latents, blocks 0..17) architectures with random weights, bf16 autocast forward,
# fp32 maps; plus the same-position attention share. Sized to finish within 8 minutes: each
# architecture is capped at 210 s (not yet run: no GPU lent); a naive capture that runs out of
# memory is reported as such.
#
#   bash benchmarks/gpu_check.sh            # writes benchmarks/results/dit_features_gpu.txt
#   OUT=/some/dir bash benchmarks/gpu_check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT_DIR=${OUT:-benchmarks/results}
mkdir -p "$OUT_DIR"
LOG="$OUT_DIR/dit_features_gpu.txt"
export PYTHONPATH="$PWD" PYTHONWARNINGS=ignore
{
  echo "# benchmarks/gpu_check.sh, $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
} 2>&1 | tee "$LOG"
status=0
for arch in wan cogvideox; do
  timeout 210 "$PY" benchmarks/dit_features.py --arch "$arch" --native --device cuda --dtype bf16 --threads 8 \
    2>&1 | tee -a "$LOG"
  rc=${PIPESTATUS[0]}
  if [ "$rc" -ne 0 ]; then echo "$arch: exit $rc (124 = over 210 s)" | tee -a "$LOG"; status=1; fi
done
exit $status
