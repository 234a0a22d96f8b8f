#!/usr/bin/env bash
# ERF of the five tiny unified models, every stage, into figures/erf_tiny/.
# Usage: [CKPT_DIR=/path/to/checkpoints] [DATA=/data/imagenet/val] bash analyses/erf_tiny.sh
set -euo pipefail
cd "$(dirname "$0")/.."
args=(--model unified_halo_tiny --model unified_pvt_tiny --model unified_swin_tiny
      --model unified_convnext_tiny --model unified_dcn_v3_tiny --out figures/erf_tiny)
if [ -n "${CKPT_DIR:-}" ]; then
  for pair in halo:halonet pvt:pvt swin:swin convnext:convnext dcn_v3:internimage; do
    args+=(--checkpoint "unified_${pair%%:*}_tiny=${CKPT_DIR}/unified_${pair##*:}_tiny.pth")
  done
fi
[ -n "${DATA:-}" ] && args+=(--data "$DATA")
stm-probe erf "${args[@]}" "$@"
