#!/usr/bin/env bash
# The trained-subject study: train the five micro STMs on the synthetic shapes-and-textures set at 64 px,
# several seeds each (replicates), then compare them with intervals that include the seed variance:
# top-1, shape bias on the synthetic cue-conflict split, PGD/FGSM robustness, invariance, ERF and the other
# bias probes, and CKA. Full run folders go to $WORK (runs/synthetic, not committed); the report, its
# CSVs and figures are copied to $FIG (figures/synthetic). Rerunning resumes what is already done.
#
# Usage: bash analyses/synthetic.sh      [SEEDS="0 1 2" EPOCHS=4 N=8000 STMS="halo pvt swin convnext dcn_v3"]
#   image counts: VAL=2000 (eval) CUE=1000 (cue-conflict) ATTACK=256 (adversarial, invariance) MAPS=64 (erf, bias)
# A smoke run of the recipe itself: SEEDS="0 1" EPOCHS=1 N=64 VAL=16 CUE=16 ATTACK=8 MAPS=4 STMS="halo convnext"
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/synthetic}
FIG=${FIG:-figures/synthetic}
SEEDS=${SEEDS:-"0 1 2"}     # training seeds: the replicates of every STM
EPOCHS=${EPOCHS:-4}         # passes over the training split: 32k images per model
# Budget (measured 2026-12-05 on the 2-core CPU, training at 64 px: halo 56, pvt 264, swin 149, convnext 166,
# dcn_v3 144 images/s): 32k images x 3 seeds x 5 STMs is about 66 min of training; PGD-10 and FGSM at 3 eps on
# 256 images for the 15 checkpoints about 20 min; the other analyses about 15 min. Run end to end 2026-12-05:
# 2 h 0 min of wall time, of which 5 min paused and about 20 min lost while tests shared the CPU with the first
# halo run (its epochs took 340 s instead of 126 s): about 1 h 35 min with nothing else running (training about
# 60 min, compare about 35 min); validation accuracy 88-98% after 4 epochs for every STM and seed.
N=${N:-8000}                # training images (8 classes; shape k always filled with texture k)
VAL=${VAL:-2000}            # validation images of eval (top-1 within about +-2 points at 85%)
CUE=${CUE:-1000}            # cue-conflict images (shape i, texture j != i) of the shape bias
ATTACK=${ATTACK:-256}       # images of adversarial and invariance
MAPS=${MAPS:-64}            # images of erf and the other bias probes
STMS=${STMS:-"halo pvt swin convnext dcn_v3"}
start=$(date +%s)

models=(); ckpts=()
mkdir -p "$FIG/train"
for stm in $STMS; do
  files=()
  for seed in $SEEDS; do
    out="$WORK/train_${stm}_s$seed"
    resume=(); [ -f "$out/run.json" ] && resume=(--resume)
    if ! grep -q '"status": "complete"' "$out/run.json" 2>/dev/null; then
      stm-probe train --model "unified_${stm}_micro" --data "synthetic:train?n=$N" --num-val-images 512 \
        --epochs "$EPOCHS" --seed "$seed" --input-size 64 --out "$out" --quiet "${resume[@]}"
    fi
    files+=("$out/checkpoint.pth")
    cp "$out/train_log.csv" "$FIG/train/${stm}_s${seed}_train_log.csv"
    cp "$out/train_curve.png" "$FIG/train/${stm}_s${seed}_train_curve.png"
  done
  models+=(--model "unified_${stm}_micro")
  ckpts+=(--checkpoint "unified_${stm}_micro=$(IFS=,; echo "${files[*]}")")
done

# one compare: every analysis once per replicate (seed); headline values are means over seeds with hierarchical
# bootstrap intervals (seeds, then images) and the pairwise claims are Holm-corrected tests that include seed variance
stm-probe compare "${models[@]}" "${ckpts[@]}" --data "synthetic:val?n=$VAL" --input-size 64 --quiet \
  --analyses eval,cue-conflict,adversarial,invariance,erf,bias,cka \
  --set "eval.num_images=$VAL" \
  --set "cue-conflict.data=synthetic:cue-conflict?n=$CUE" --set "cue-conflict.num_images=$CUE" \
  --set "adversarial.num_images=$ATTACK" --set adversarial.attack=fgsm,pgd --set adversarial.eps=1,2,4 \
  --set "invariance.num_images=$ATTACK" \
  --set "erf.num_images=$MAPS" --set erf.thresholds=0.2,0.3,0.5,0.99 \
  --set "bias.num_images=$MAPS" --set bias.probe=patch-shuffle,patch-drop,fourier,frequency-filter \
  --set "cka.num_images=$MAPS" \
  --out "$WORK/compare"

# committed: report.md, a report.html that links its figures (--link-figures; the self-contained page embeds
# 14 MB of figures and stays in $WORK/compare), the heat map, each run's tidy CSV (not per_image.csv) and the
# figures the report shows, as 256-colour PNGs
mkdir -p "$FIG"
stm-probe report "$WORK/compare" --link-figures > /dev/null
cp "$WORK/compare/report.md" "$WORK/compare/report.html" "$WORK/compare/summary_heatmap.png" "$FIG/"
stm-probe report "$WORK/compare" > /dev/null  # the self-contained page again
for folder in "$WORK"/compare/*/; do
  name=$(basename "$folder")
  mkdir -p "$FIG/$name"
  for csv in "$folder"/*.csv; do [ "$(basename "$csv")" = per_image.csv ] || cp "$csv" "$FIG/$name/"; done
done
grep -o '](\([^)]*\.png\))' "$FIG/report.md" | sed 's/](\(.*\))/\1/' | sort -u | while read -r png; do
  cp "$WORK/compare/$png" "$FIG/$png"
done
python - "$FIG" <<'PY'
import sys
from pathlib import Path
from PIL import Image
for path in Path(sys.argv[1]).rglob("*.png"):
    Image.open(path).convert("RGB").quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)
PY
echo "synthetic study: $(( $(date +%s) - start )) s; report and figures in $FIG"
