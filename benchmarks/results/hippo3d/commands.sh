#!/bin/bash
# Frozen-code 3D hippocampus benchmark: (a) supervised full, (b) supervised 5 %, (c) mean-teacher 5 %; seed 0.
cd /work/wt/bench3d
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=/work/wt/bench3d
PY=/work/main/.venv/bin/python
COMMON="--data /work/shared/data/hippocampus3d --spatial-dims 3 --seeds 0 --profile realistic --patch-size 32 --base-channels 16 --batch-size 2 --iterations 700 --val-every 175 --lr-schedule poly --threads 1 --num-workers 0 --device cpu --out runs/hippo3d"
date -u +"start %T"
$PY -m ssl_seg.cli ablate --methods supervised --fractions 1.0 $COMMON; date -u +"a done %T"
$PY -m ssl_seg.cli ablate --methods supervised --fractions 0.05 --no-full-reference $COMMON; date -u +"b done %T"
$PY -m ssl_seg.cli ablate --methods mean-teacher --fractions 0.05 --no-full-reference $COMMON; date -u +"c done %T"
#!/bin/bash
# (c) mean-teacher 5 %, from the frozen copy of commit 25066e1 (same code as (a), (b)); same output grid.
# cwd is the frozen copy because `python -m` puts the cwd first on sys.path.
cd /work/wt/bench3d/runs/frozen25066e1
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=/work/wt/bench3d/runs/frozen25066e1
PY=/work/main/.venv/bin/python
COMMON="--data /work/shared/data/hippocampus3d --spatial-dims 3 --seeds 0 --profile realistic --patch-size 32 --base-channels 16 --batch-size 2 --iterations 700 --val-every 175 --lr-schedule poly --threads 1 --num-workers 0 --device cpu --out /work/wt/bench3d/runs/hippo3d"
while kill -0 14583 2>/dev/null; do sleep 5; done; date -u +"b done %T"
$PY -c "import ssl_seg; print('ssl_seg from', ssl_seg.__file__)"
$PY -m ssl_seg.cli ablate --methods mean-teacher --fractions 0.05 --no-full-reference $COMMON; date -u +"c done %T"
