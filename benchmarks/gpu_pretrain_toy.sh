#!/usr/bin/env bash
# Issue 19 item 1, for the day a GPU is lent: pretrain the two toy geometries whose matched
# features have resolution (motionmatcher/toy/geometries.py: `unet-res`, down_blocks.2 at 8x8;
# `wan-toy-word`, 8x8 tokens per frame: 8,192 clips, 10,000 steps with a 1,000-step decay; the
# CPU-trained recipes on 1,024 clips failed the gate, docs/toy_models.md) on one H100/H200, then
# run the quality gate
# (benchmarks/toy_gate.py) on each. Sized for <= 10 min of device time: both pretrainings run
# side by side on the one GPU (tiny models: kernel-launch bound, two processes overlap), each
# capped at $TRAIN_S seconds (default 400), then both gates side by side (<= 90 s each). The
# denoisers train under bf16 autocast (weights, AdamW and the loss float32), the VAEs in float32.
# A run that hits its cap keeps its checkpoints (every 250 steps) in $WORK, so rerunning the
# script on the still-warm machine resumes; they are also copied under $OUT/work-*/ (copy them
# back to $WORK, or to resources/toy_pretrain_res/ and checkpoints/wan-toy-word/ for
# `make toy-model-res/-dit`, to resume).
#
#   bash benchmarks/gpu_pretrain_toy.sh             # GPU: models, gate figures, logs under $OUT
#   bash benchmarks/gpu_pretrain_toy.sh --smoke     # CPU, a few steps of everything (~5 min on 1 core)
#
# Outputs ($OUT, default benchmarks/results/gpu_pretrain_toy): models/toy_t2v_res/,
# models/toy_wan/ (fp16 safetensors, ~5 MB and ~1.4 MB), gate_{res,wan}.json + .png (8 sampled
# held-out prompts, one row each), work-{res,wan}/ (checkpoints + training logs), run.log.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
OUT_DIR=${OUT:-benchmarks/results/gpu_pretrain_toy}
SMOKE=0
[ "${1:-}" = "--smoke" ] && SMOKE=1
mkdir -p "$OUT_DIR/models"
LOG="$OUT_DIR/run.log"
# checkpoints + encoded latents (134 MB for unet-res: not under $OUT); a rerun on a warm machine
# resumes from here
WORK=${WORK:-resources/gpu_pretrain_toy$([ "$SMOKE" = 1 ] && echo _smoke)}
export PYTHONPATH="$PWD" PYTHONWARNINGS=ignore
if [ "$SMOKE" = 1 ]; then
  DEV=(--device cpu --threads 1)
  STEPS=(--vae-steps 3 --steps 3 --batch 2 --clips 4 --ckpt-every 2)
  GATE=(--n 8 --steps 2 --device cpu --threads 1)
  TRAIN_S=${TRAIN_S:-600}
else
  DEV=(--device cuda --amp --threads 4)
  STEPS=(--ckpt-every 250)
  GATE=(--n 56 --steps 20 --device cuda --threads 4)
  TRAIN_S=${TRAIN_S:-400}
fi
{
  echo "# benchmarks/gpu_pretrain_toy.sh $*, $(date -u +%FT%TZ), git $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
  [ "$SMOKE" = 1 ] || nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" -c "import torch, diffusers; print('torch', torch.__version__, 'diffusers', diffusers.__version__)"
} 2>&1 | tee "$LOG"

train() {  # geometry, model name, work name, extra recipe arguments
  local t0=$SECONDS
  timeout "$TRAIN_S" "$PY" -m motionmatcher.toy.geometries --geometry "$1" --out "$OUT_DIR/models/$2" \
    --work "$WORK/$3" --seed 0 "${DEV[@]}" "${STEPS[@]}" "${@:4}" > "$OUT_DIR/train-$3.log" 2>&1
  local rc=$?
  echo "$1: exit $rc after $((SECONDS - t0)) s (124 = over ${TRAIN_S} s: resume from work-$3/)" >> "$LOG"
  mkdir -p "$OUT_DIR/work-$3"
  for f in vae_ckpt unet_ckpt dit_ckpt vae_log.jsonl unet_log.jsonl dit_log.jsonl recipe.json; do
    [ -e "$WORK/$3/$f" ] && cp -r "$WORK/$3/$f" "$OUT_DIR/work-$3/"
  done
  return $rc
}
train unet-res toy_t2v_res res & P1=$!
if [ "$SMOKE" = 1 ]; then WAN_RECIPE=(--decay 1); else WAN_RECIPE=(); fi
train wan-toy-word toy_wan wan ${WAN_RECIPE[@]+"${WAN_RECIPE[@]}"} & P2=$!
wait $P1; R1=$?
wait $P2; R2=$?
gate() {  # tag, model; exit 0 passed, 1 failed, else crashed / over 90 s
  timeout 90 "$PY" benchmarks/toy_gate.py --model "$OUT_DIR/models/$2" "${GATE[@]}" \
    --json "$OUT_DIR/gate_$1.json" --png "$OUT_DIR/gate_$1.png" > "$OUT_DIR/gate_$1.log" 2>&1
}
G1=9; G2=9
if [ "$R1" -eq 0 ]; then gate res toy_t2v_res & Q1=$!; fi
if [ "$R2" -eq 0 ]; then gate wan toy_wan & Q2=$!; fi
[ "$R1" -eq 0 ] && { wait $Q1; G1=$?; }
[ "$R2" -eq 0 ] && { wait $Q2; G2=$?; }
for tag in res wan; do grep -v Loading "$OUT_DIR/gate_$tag.log" 2>/dev/null | tee -a "$LOG"; done
echo "training exit: unet-res $R1, wan-toy-word $R2; gate exit (0 passed, 1 failed): unet-res $G1, wan-toy-word $G2" | tee -a "$LOG"
status=0
[ "$R1" -eq 0 ] && [ "$R2" -eq 0 ] || status=1
if [ "$SMOKE" = 1 ]; then  # a few steps cannot pass the gate: it must only run
  [ "$G1" -le 1 ] && [ "$G2" -le 1 ] || status=1
else
  [ "$G1" -eq 0 ] && [ "$G2" -eq 0 ] || status=1
fi
du -sh "$OUT_DIR"/models/* 2>/dev/null | tee -a "$LOG"
exit $status
