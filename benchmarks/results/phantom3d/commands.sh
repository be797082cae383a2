#!/bin/bash
# Issue 14: the 3D phantom table at the standard profile, shrunk to fit the shared CPU (see RESULTS.md): phantom
# volumes at size 32 (12 x 32 x 32 voxels of 3 x 1 x 1 mm) instead of the profile's 64, 200 iterations instead of 300.
# Frozen code 5149065; seed by seed so that whole seeds finish first.
cd /work/wt/bench3d/runs/frozen5149
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=/work/wt/bench3d/runs/frozen5149
PY=/work/main/.venv/bin/python
COMMON=(--data "phantom:lesion_volume?n=200&size=32" --spatial-dims 3 --profile standard --iterations 200
        --device cpu --threads 1 --num-workers 0 --out /work/wt/bench3d/runs/phantom3d)
date -u +"start %T"
for s in 0 1 2; do
  $PY -m ssl_seg.cli ablate --methods supervised mean-teacher --fractions 0.05 0.1 --seeds $s "${COMMON[@]}"
  date -u +"seed $s done %T"
done
#!/bin/bash
# Sensitivity check of the shrunk phantom budget: seed 0 again at the standard profile's own 300 iterations
# (same size-32 volumes, same frozen code 5149065); starts when runs/phantom3d.sh (pid 1577) has finished.
while kill -0 1577 2>/dev/null; do sleep 10; done
cd /work/wt/bench3d/runs/frozen5149
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 PYTHONPATH=/work/wt/bench3d/runs/frozen5149
date -u +"start %T"
/work/main/.venv/bin/python -m ssl_seg.cli ablate --data "phantom:lesion_volume?n=200&size=32" --spatial-dims 3 \
  --profile standard --methods supervised mean-teacher --fractions 0.05 0.1 --seeds 0 \
  --device cpu --threads 1 --num-workers 0 --out /work/wt/bench3d/runs/phantom3d_300
date -u +"seed 0 done %T"
