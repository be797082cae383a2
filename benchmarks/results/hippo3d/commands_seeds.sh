#!/bin/bash
# Issue 14: 3D hippocampus, 5 % seeds 1-2 and 10 % seeds 0-2, supervised and mean-teacher; frozen code 58ba2c8.
cd /work/runs/frozen58ba
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=/work/runs/frozen58ba
PY=/work/main/.venv/bin/python
COMMON="--data /work/shared/data/hippocampus3d --spatial-dims 3 --profile realistic --patch-size 32 --base-channels 16 --batch-size 2 --iterations 700 --val-every 175 --lr-schedule poly --threads 1 --num-workers 0 --device cpu --no-full-reference --out /work/wt/bench3d/runs/hippo3d"
date -u +"start %T"
for s in 1 2; do for m in supervised mean-teacher; do
  $PY -m ssl_seg.cli ablate --methods $m --fractions 0.05 --seeds $s $COMMON; date -u +"f0.05 $m s$s done %T"
done; done
for s in 0 1 2; do for m in supervised mean-teacher; do
  $PY -m ssl_seg.cli ablate --methods $m --fractions 0.1 --seeds $s $COMMON; date -u +"f0.1 $m s$s done %T"
done; done
