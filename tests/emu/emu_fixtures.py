"""Fixtures of the emulator tests, imported by each test module (a ``conftest.py`` here would shadow the suite's
own ``conftest`` module, which other tests import by name) (``emu_build.py`` says what the emulator proves and what it does not): the
toolchain probe, once per session (a skip with the reason where g++ lacks C++17, _Float16 or ucontext; a failure
instead under GPUCAL_REQUIRE_EMU=1), the repository's two CUDA sources built against ``emu.h`` once per session
(both compilers at once, into the session's tmp folder), guarded memory per test, and a ``CupyBackend`` whose
kernels run on the emulator."""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import types

import numpy as np
import pytest

import emu_build as eb
from gpucal.kernels import cuda_src, decode_src
from gpucal.kernels.base import DeviceInfo


@pytest.fixture(scope="session")
def emu_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("emu")


@pytest.fixture(scope="session")
def toolchain(emu_dir):
    reason = eb.toolchain_reason(emu_dir)
    if reason and os.environ.get("GPUCAL_REQUIRE_EMU") == "1":
        pytest.fail(f"GPUCAL_REQUIRE_EMU=1 but {reason}")
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def libraries(toolchain, emu_dir):
    """{"kernels": cuda_src.SOURCE, "decode": decode_src.DECODE_SOURCE}, each built once, both compiles at once."""
    return eb.build_many({"kernels": (cuda_src.SOURCE, cuda_src.KERNEL_NAMES),
                          "decode": (decode_src.DECODE_SOURCE, decode_src.DECODE_KERNEL_NAMES)}, emu_dir)


@pytest.fixture(scope="session")
def kernels_lib(libraries):
    return libraries["kernels"]


@pytest.fixture(scope="session")
def decode_lib(libraries):
    return libraries["decode"]


@pytest.fixture
def memory():
    """Guarded arrays; after the test, no kernel wrote outside one nor into a read-only input."""
    mem = eb.Memory()
    yield mem
    assert mem.intact() is None, mem.intact()


@pytest.fixture
def emulated_cupy(libraries, memory, monkeypatch):
    """``make(sm_count)``: a ``CupyBackend`` (the real launchers: shapes, splits, argument types) whose kernels
    run on the emulator and whose ``cupy`` is NumPy over guarded memory. Skips where CuPy is not installed."""
    if importlib.util.find_spec("cupy") is None:
        pytest.skip("CuPy is not installed: cupy_backend cannot be imported")
    cb = importlib.import_module("gpucal.kernels.cupy_backend")
    shim = types.SimpleNamespace(
        float32=np.float32, uint32=np.uint32, uint16=np.uint16, uint64=np.uint64, float16=np.float16,
        empty=lambda shape, dtype=np.float32: memory.empty(shape, dtype),
        full=lambda shape, value, dtype=None: memory.array(shape, dtype, fill=value),
        random=np.random, cuda=types.SimpleNamespace(Device=lambda index=None: contextlib.nullcontext()))
    monkeypatch.setattr(cb, "cupy", shim)

    class EmulatedCupy(cb.CupyBackend):
        def __init__(self, sm_count: int):  # no CUDA runtime: nothing of CupyBackend.__init__
            self.device_index, self._devices, self._workspace = 0, None, None
            self.copy_kernel, self.copy_waves = cb.COPY_KERNEL, cb.COPY_WAVES
            self.sm_count = sm_count

        def device(self):
            return DeviceInfo(0, "emulated", sm_count=self.sm_count)

        def kernel(self, name):
            return libraries["kernels"].kernel(name)

        def decode_kernel(self, name):
            assert f" {name}(" in decode_src.decode_module_source(name), f"{name}: not in the module the backend loads"
            return libraries["decode"].kernel(name)

    return EmulatedCupy
