#!/usr/bin/env bash
# F-adv and T-adv: FGSM and PGD-10 (Linf) robustness vs eps of the five tiny models.
# Usage: [CKPT_DIR=...] [DATA=...] [IMAGES=50] bash analyses/adversarial.sh
source "$(dirname "$0")/common.sh"
run_recipe adversarial-tiny adversarial --model 'unified_*_tiny' --attack fgsm,pgd --eps 1,2,4,8 --save-examples 4 "$@"
