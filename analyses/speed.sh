#!/usr/bin/env bash
# T-speed: throughput of the five tiny models, forward and forward+backward, fp32, with the paper's protocol
# (batch 128 at 224, 10 warm-up and 100 timed iterations). On a CPU pass a reduced protocol, e.g.
#   DEVICE=cpu BATCH=16 WARMUP=1 ITERS=3 bash analyses/speed.sh   (the committed CPU table, at 224 px)
source "$(dirname "$0")/common.sh"
device=${DEVICE:-auto}
stm-probe paper speed --model 'unified_*_tiny' --device "$device" --batch-size "${BATCH:-128}" \
  --input-size "${SPEED_SIZE:-224}" --warmup "${WARMUP:-10}" --iterations "${ITERS:-100}" --out "figures/speed/${TAG:-$device}"
