#!/usr/bin/env bash
# Trained subjects on any machine: train the five micro STMs on the synthetic shapes-and-textures set
# at 64 px, then run eval, ERF, invariance, adversarial, the bias probes and CKA on them. Full run folders go to
# $WORK (runs/synthetic by default, not committed); the CSVs and figures are copied to
# figures/synthetic/<probe>/. Rerunning resumes what is already done.
# Usage: bash analyses/synthetic.sh   [EPOCHS=3 N=4000 IMAGES=16 WORK=runs/synthetic]  (about 11 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=${WORK:-runs/synthetic}
FIG=${FIG:-figures/synthetic}
EPOCHS=${EPOCHS:-3}        # passes over the training split
N=${N:-4000}               # training images (8 classes, shape k always with texture k)
IMAGES=${IMAGES:-16}       # validation images each probe measures
STMS="halo pvt swin convnext dcn_v3"
start=$(date +%s)

ckpts=()
for stm in $STMS; do
  out="$WORK/train_$stm"
  resume=(); [ -f "$out/run.json" ] && resume=(--resume)
  if ! grep -q '"status": "complete"' "$out/run.json" 2>/dev/null; then
    stm-probe train --model "unified_${stm}_micro" --data "synthetic?n=$N" --num-val-images 512 --epochs "$EPOCHS" \
      --input-size 64 --out "$out" --quiet "${resume[@]}"
  fi
  ckpts+=(--checkpoint "unified_${stm}_micro=$out/checkpoint.pth")
  mkdir -p "$FIG/train"
  cp "$out/train_log.csv" "$FIG/train/${stm}_train_log.csv"
  cp "$out/train_curve.png" "$FIG/train/${stm}_train_curve.png"
done

common=(--model 'unified_*_micro' "${ckpts[@]}" --data synthetic:val --num-images "$IMAGES" --input-size 64 --quiet)
run_probe() {  # probe, then its own options
  local probe=$1; shift
  local out="$WORK/$probe"
  if ! grep -q '"status": "complete"' "$out/run.json" 2>/dev/null; then
    local resume=(); [ -f "$out/run.json" ] && resume=(--resume)
    stm-probe "$probe" "${common[@]}" --out "$out" "${resume[@]}" "$@"
  else
    stm-probe plot "$probe" "$out" >/dev/null  # a complete run: redraw its figures in today's style
  fi
  mkdir -p "$FIG/$probe"
  cp "$out/$probe.csv" "$out"/*.png "$FIG/$probe/"
}
run_probe eval
run_probe erf
run_probe invariance
run_probe adversarial --attack fgsm,pgd --eps 1,2,4,8
run_probe bias --probe patch-shuffle,patch-drop,fourier,frequency-filter,attribution
run_probe cka --kernel linear,rbf --compare-init  # the five trained STMs against each other and their initialisation
echo "synthetic recipe: $(( $(date +%s) - start )) s; figures and CSVs in $FIG"
