# Sourced by the recipes. Environment:
#   CKPT_DIR  folder of the released checkpoints (unified_<stm>_<size>[-ema].pth); unset: random-init models
#   DATA      images (e.g. ImageNet val: the synset folders, or ILSVRC2012_img_val with LABELS); unset: the embedded default
#   LABELS    labels file of a flat DATA folder (ILSVRC2012_validation_ground_truth.txt, LOC_val_solution.csv, CSV)
#   IMAGES    images per analysis (default: each command's own default)
#   SIZE      input size (default 224)
#   WORK      where full run folders go (default runs/paper; not committed)
# Outputs: figures/<artefact>/<weights>/ with the CSVs, PNGs and manifest.json of each run, where
# <weights> is "released" with CKPT_DIR and "random-init" without.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WORK=${WORK:-runs/paper}
WEIGHTS=random-init
common=(--quiet --input-size "${SIZE:-224}")
if [ -n "${CKPT_DIR:-}" ]; then WEIGHTS=released; common+=(--checkpoint-dir "$CKPT_DIR"); fi
[ -n "${DATA:-}" ] && common+=(--data "$DATA")
[ -n "${LABELS:-}" ] && common+=(--labels "$LABELS")
[ -n "${IMAGES:-}" ] && common+=(--num-images "$IMAGES")

# run_recipe ARTEFACT PROBE [options...]: run (or resume) one probe into $WORK, copy its small files to figures/
run_recipe() {
  local artefact=$1 probe=$2; shift 2
  local out="$WORK/$artefact/$WEIGHTS" fig="figures/$artefact/$WEIGHTS"
  if ! grep -q '"status": "complete"' "$out/run.json" 2>/dev/null; then
    local resume=(); [ -f "$out/run.json" ] && resume=(--resume)
    stm-probe "$probe" "${common[@]}" --out "$out" "${resume[@]}" "$@"
  else
    stm-probe plot "$probe" "$out" >/dev/null  # a complete run: redraw its figures in today's style
  fi
  rm -rf "$fig" && mkdir -p "$fig"
  cp "$out"/*.csv "$out"/*.png "$out/manifest.json" "$fig/"
  rm -f "$fig/per_image.csv" "$fig"/adversarial_examples_*.png  # per-image values and per-model example sheets
                                                                 # stay in $WORK (the grid of all models is kept)
  echo "$artefact ($WEIGHTS): $fig"
}
