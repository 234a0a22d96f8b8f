#!/usr/bin/env bash
# F1 teaser: published top-1 vs parameters (bubble area ~ GMACs) of the 20 unified models. Needs no checkpoint.
source "$(dirname "$0")/common.sh"
stm-probe paper teaser --out figures/teaser
