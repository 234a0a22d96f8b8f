#!/usr/bin/env bash
# F-erf and T-erf: effective receptive fields (heat maps, every stage) and area ratios of the five tiny models.
# Usage: [CKPT_DIR=...] [DATA=...] [IMAGES=50] bash analyses/erf.sh
source "$(dirname "$0")/common.sh"
run_recipe erf-tiny erf --model 'unified_*_tiny' "$@"
