#!/usr/bin/env bash
# The GPU check as one script for a machine with a GPU and no registry (the lent GPU machine): install
# offline, then the GPU tests, gpucal info, CLI probes (NCCL collectives and the MPI network probe too),
# calibrate, and bench/gpu_check.py; everything under $OUT.
set -o pipefail
export PYTHONUNBUFFERED=1 NUMBA_ENABLE_CUDASIM=0
OUT="${OUT:-bench/out}"; mkdir -p "$OUT"
if ls .whl/*.whl >/dev/null 2>&1; then  # wheels carried for packages the machine lacks (jsonschema)
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$OUT/install.log" 2>&1 || { tail -5 "$OUT/install.log"; exit 1; }
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem,clocks.sm,clocks.mem,temperature.gpu,power.draw --format=csv | tee "$OUT/info.txt"
gpucal info | tee -a "$OUT/info.txt"
timeout "${PYTEST_TIMEOUT:-200}" python3 -m pytest -q -m gpu tests/gpu >"$OUT/pytest_gpu.txt" 2>&1; tail -4 "$OUT/pytest_gpu.txt"
timeout 90 python3 bench/copy_variants.py 2>&1 | tee "$OUT/copy_variants.txt"
timeout 60 python3 bench/gemv_variants.py 2>&1 | tee "$OUT/gemv_variants.txt"
timeout 60 gpucal probe flops --dtype bf16 --sizes 4096 --batches 1 2>&1 | tee "$OUT/probe_flops.txt"
timeout 90 gpucal p2p --sizes 4B..64MiB 2>&1 | tee "$OUT/p2p.txt"
( time timeout 120 gpucal calibrate -o "$OUT/calibrated.json" --force --plots "$OUT/plots" ) 2>&1 | tee "$OUT/calibrate.txt"
# over MPI (where the machine's python has mpi4py): NCCL on one rank, the network probe over loopback
timeout 60 gpucal probe collectives --graphs --hidden 4096 --budget 0.1 2>&1 | tee "$OUT/collectives.txt"
timeout 30 mpiexec -n 2 gpucal probe net --sizes 8B..16MiB --budget 0.05 2>&1 | tee "$OUT/net.txt"
timeout "${CHECK_TIMEOUT:-300}" python3 bench/gpu_check.py --out "$OUT/gpu_check.json" 2>&1 | tee "$OUT/gpu_check.txt"
