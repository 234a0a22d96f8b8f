#!/usr/bin/env bash
# T-arch: dims, depths, heads, window / halo / sr, drop path, parameters and GMACs of every unified model.
source "$(dirname "$0")/common.sh"
stm-probe paper arch --out figures/arch
