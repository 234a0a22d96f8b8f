#!/usr/bin/env bash
# F-inv-T, F-inv-R, F-inv-S: translation, rotation and scale invariance curves of the five tiny models.
# Usage: [CKPT_DIR=...] [DATA=...] [IMAGES=50] bash analyses/invariance.sh
source "$(dirname "$0")/common.sh"
run_recipe invariance-tiny invariance --model 'unified_*_tiny' --kind translation,pre-rotation,post-rotation,scale "$@"
