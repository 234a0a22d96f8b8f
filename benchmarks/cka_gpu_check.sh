#!/usr/bin/env bash
# GPU check of `stm-probe cka` (one short script, OUT=folder for results): CUDA equals CPU on the micro models;
# time and peak host memory of 5 tiny models x 1,000 synthetic images at 224 px (docs/protocols.md s. 11).
# Not run yet (written for a session with a GPU): OUT=DIR bash benchmarks/cka_gpu_check.sh
set -u
export PYTHONPATH=$PWD MPLBACKEND=Agg PYTHONUNBUFFERED=1
common=(--model 'unified_*_micro' --input-size 64 --num-images 16 --kernel linear,rbf --bootstrap 200 --quiet)
timeout 50 python3 -m stm_probe cka "${common[@]}" --device cuda --out /tmp/g 2>&1 | tail -3
timeout 40 python3 -m stm_probe cka "${common[@]}" --device cpu --out /tmp/c 2>&1 | tail -1
cp /tmp/g/cka.csv $OUT/micro_cuda.csv; cp /tmp/c/cka.csv $OUT/micro_cpu.csv; cp /tmp/g/cka_models.png $OUT/
python3 - <<'PY'
import pandas as pd, numpy as np
a, b = pd.read_csv("/tmp/g/cka.csv"), pd.read_csv("/tmp/c/cka.csv")
for c in ("value", "ci_low", "ci_high"):
    print(c, "max |cuda - cpu|", float(np.nanmax(np.abs(a[c] - b[c]))))
d = a[(a.model == a.other_model) & (a.layer == a.other_layer)]
print("diagonal max |1 - cka|", float((d.value - 1).abs().max()))
PY
python3 - <<'PY' 2>&1 | tail -8
import resource, subprocess, time, os
t = time.time()
cmd = ["python3", "-m", "stm_probe", "cka", "--model", "unified_*_tiny", "--input-size", "224", "--data",
       "synthetic:val?n=1000&size=224", "--num-images", "1000", "--device", "cuda", "--workers", "8",
       "--bootstrap", "200", "--batch-size", "64", "--quiet", "--out", "/tmp/tiny"]
p = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
print(p.stdout[-1500:], p.stderr[-1500:])
print("tiny x5, 1000 images, 224 px: wall", round(time.time() - t, 1), "s; peak RSS (GB)",
      resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20)
os.system(f"cp /tmp/tiny/cka.csv {os.environ['OUT']}/tiny_cka.csv; cp /tmp/tiny/manifest.json {os.environ['OUT']}/tiny_manifest.json")
PY
