#!/usr/bin/env bash
# T-cls: top-1 / top-5 / NLL / ECE of the five tiny models beside the published top-1.
# Usage: CKPT_DIR=... DATA=/imagenet/val [LABELS=...] bash analyses/classification.sh
source "$(dirname "$0")/common.sh"
run_recipe cls-tiny eval --model 'unified_*_tiny' "$@"
