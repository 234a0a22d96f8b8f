#!/usr/bin/env bash
# The GPU checks of one session on a CUDA machine, as one script (docs/scale.md records the results).
# Usage: bash benchmarks/gpu_checks.sh OUTDIR      (run from the repository root; python3 must hold torch + triton)
# The CPU-heavy tests run on the upper half of the cores while the GPU timings use the lower half.
set -u
out=${1:?usage: gpu_checks.sh OUTDIR}
mkdir -p "$out"
export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}$PWD PYTHONUNBUFFERED=1 MPLBACKEND=Agg
cores=$(nproc)
half=$((cores / 2))
low="0-$((half - 1))"
high="$half-$((cores - 1))"
{
  date -u; nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c "import torch, triton, timm; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'triton', triton.__version__, 'timm', timm.__version__)"
} 2>&1 | tee "$out/versions.txt"

# tests that touch CUDA (DCNv3 kernels, precision, torchrun identity), in the background
(OMP_NUM_THREADS=2 timeout 420 taskset -c "$high" python3 -m pytest -q -p no:cacheprovider \
    tests/test_dcnv3.py tests/test_precision.py tests/test_distributed.py > "$out/pytest.txt" 2>&1;
 echo "exit $?" >> "$out/pytest.txt") &
tests=$!

run() {  # run LIMIT_S LOGNAME COMMAND...
  local limit=$1 log=$2; shift 2
  echo "== $*" | tee -a "$out/$log"
  timeout "$limit" taskset -c "$low" "$@" 2>&1 | tee -a "$out/$log"
  echo "exit ${PIPESTATUS[0]}" | tee -a "$out/$log"
}
run 150 tune.txt python3 benchmarks/dcnv3_tune.py --block-rows 16,32,64,128 --warps 2,4,8
run 80 dcnv3_speed.txt python3 benchmarks/dcnv3_speed.py --device cuda --batch-size 64 --model-batch-size 64
run 60 readme.txt python3 -m stm_probe erf --model unified_tiny_attn --device cuda --out runs/gpu-erf --quiet
run 90 readme.txt python3 -m torch.distributed.run --standalone --nproc_per_node 1 -m stm_probe invariance \
    --model 'unified_*_tiny' --device cuda --num-images 16 --out runs/gpu-torchrun --quiet
run 150 precision.txt python3 benchmarks/precision_speed.py speed --device cuda
wait $tests
tail -5 "$out/pytest.txt"
