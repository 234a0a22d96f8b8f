#!/usr/bin/env bash
# Every recipe, in turn: regenerates every artefact committed in figures/.
# Usage: [CKPT_DIR=...] [DATA=...] [LABELS=...] [IMAGES=...] [SIZE=...] bash analyses/all.sh
# Without CKPT_DIR the models are random-init (outputs in figures/<artefact>/random-init/, labelled so);
# the committed random-init versions were made with IMAGES=8 SIZE=64 and the CPU speed table with
# BATCH=16 WARMUP=1 ITERS=3 DEVICE=cpu (about 25 min on 2 CPU cores, synthetic.sh included).
set -euo pipefail
here="$(dirname "$0")"
bash "$here/teaser.sh"
bash "$here/architecture.sh"
bash "$here/speed.sh"
bash "$here/classification.sh"
bash "$here/erf.sh"
bash "$here/invariance.sh"
bash "$here/adversarial.sh"
env -u IMAGES -u SIZE bash "$here/synthetic.sh"   # its own settings (16 images at 64 px)
