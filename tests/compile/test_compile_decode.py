"""Every decode kernel of ``numba_decode.py`` compiled to PTX for sm_80, sm_89 and sm_90 (numba-cuda's NVVM, in a
process without the simulator flag), each signature of ``SIGNATURES``, with one entry point each."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_compile import CCS, _without_simulator

SCRIPT = r"""
import json
from numba import cuda
from gpucal.kernels import numba_decode as nd
done = []
for name, sigs in nd.SIGNATURES.items():
    for sig in sigs:
        for cc in %s:
            ptx, _ = cuda.compile_ptx(getattr(nd, name).py_func, sig, cc=cc)
            assert ptx.count(".entry ") == 1, (name, sig, cc)
            assert ".target sm_%%d%%d" %% cc in ptx, (name, cc)
            done.append([name, str(sig), list(cc)])
print(json.dumps(done))
"""


def test_every_decode_kernel_compiles_to_ptx():
    proc = subprocess.run([sys.executable, "-c", SCRIPT % (CCS,)], capture_output=True, text=True,
                          env=_without_simulator(), timeout=600)
    if "libnvvm" in proc.stderr.lower() and "not found" in proc.stderr.lower():
        pytest.skip("NVVM is not installed here (pip install 'numba-cuda[cu13]')")
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = json.loads(proc.stdout)
    from gpucal.kernels.numba_decode import SIGNATURES

    assert len(done) == sum(len(s) for s in SIGNATURES.values()) * len(CCS)
    assert {d[0] for d in done} == {"attention", "attention_sim", "add_rmsnorm", "add_rmsnorm_sim", "rotary",
                                    "silu_mul", "tick"}
    assert {tuple(d[2]) for d in done} == set(CCS)
