"""The ``numba`` backend (real GPU through numba-cuda) and the ``simulator`` backend (the same kernels on
the CPU with ``NUMBA_ENABLE_CUDASIM=1``).

The simulator runs each thread as a Python thread: it checks that kernels compute the right thing, at
tiny sizes. It has one device, no warp intrinsics and no event timing (its events return -1), so it
times with the host clock, and its results are labelled ``simulated``: never GPU figures.
bf16 is not offered here (Numba has no bf16 arithmetic in the simulator); the GEMM is the tiled
shared-memory kernel on CUDA cores, fp32 accumulate and fp32 output, in every mode it offers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
from numba import cuda  # noqa: TID253 - a backend module: imported only where that backend is selected

from gpucal.errors import InputError
from gpucal.kernels import numba_kernels as nk  # noqa: TID253 - a backend module: imported only where that backend is selected
from gpucal.kernels.base import Backend, DeviceInfo, merge_nvml

__all__ = ["NumbaBackend", "numba_status"]

SIM_DEVICE_NAME = "Numba CUDA simulator (CPU)"


def numba_status(simulated: bool) -> tuple[bool, str]:
    import numba

    if simulated:
        return True, f"numba {numba.__version__}, numba-cuda simulator on the CPU (checks kernels; no GPU timing)"
    if getattr(cuda, "implementation", None) != "NVIDIA":
        return False, "numba-cuda is not the active CUDA target (install numba-cuda in the environment)"
    try:
        ok = cuda.is_available()
    except Exception as exc:
        return False, f"no device ({exc})"
    if not ok:
        return False, "no device (numba-cuda found no CUDA driver or GPU)"
    try:  # a GPU is there; can this numba build compile and run a kernel with this NumPy?
        probe = cuda.to_device(np.zeros(4, dtype=np.uint32))
        nk.stream_write[1, 32](probe, np.uint32(7))
        cuda.synchronize()
        if int(probe.copy_to_host()[1]) != (2654435761 ^ 7):
            return False, "unusable here: a test kernel wrote the wrong value"
    except Exception as exc:
        return False, f"unusable here (a test kernel failed: {type(exc).__name__}: {exc})"
    return True, f"numba {numba.__version__}, numba-cuda, {len(cuda.gpus)} device(s)"


class NumbaBackend(Backend):
    gemv_dtypes = ("fp16", "fp32")

    def __init__(self, simulated: bool, device: int = 0):
        self.simulated = simulated
        self.name = "simulator" if simulated else "numba"
        self.clock = "host" if simulated else "cuda-events"
        count = 1 if simulated else len(cuda.gpus)
        if not 0 <= device < count:
            raise InputError(f"--device: device {device} does not exist (this machine has {count})")
        self.device_index = device
        cuda.select_device(device)
        self._devices = None


    def on_device(self, device: int) -> NumbaBackend:
        return self if device == self.device_index else NumbaBackend(self.simulated, device)

    def devices(self) -> list[DeviceInfo]:
        if self._devices is not None:
            return self._devices
        if self.simulated:
            self._devices = [DeviceInfo(index=0, name=SIM_DEVICE_NAME, sources={"name": "simulator"})]
            return self._devices
        out = []
        for i, gpu in enumerate(cuda.gpus):
            with gpu:
                dev = cuda.get_current_device()
                free, total = cuda.current_context().get_memory_info()
                mem_khz = getattr(dev, "MEMORY_CLOCK_RATE", None)
                bus_id = f"{dev.PCI_DOMAIN_ID:04x}:{dev.PCI_BUS_ID:02x}:{dev.PCI_DEVICE_ID:02x}.0"
                uuid = getattr(dev, "uuid", None)
                info = DeviceInfo(
                    index=i, name=dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name),
                    uuid=uuid, compute_capability="{}.{}".format(*dev.compute_capability),
                    sm_count=dev.MULTIPROCESSOR_COUNT, memory_bytes=int(total), l2_bytes=dev.L2_CACHE_SIZE,
                    memory_clock_hz=mem_khz * 1e3 if mem_khz else None,
                    memory_bus_width_bits=getattr(dev, "GLOBAL_MEMORY_BUS_WIDTH", None), pci_bus_id=bus_id,
                    sources={k: "runtime" for k in ("name", "compute_capability", "sm_count", "memory_bytes",
                                                     "l2_bytes", "memory_clock_hz", "memory_bus_width_bits")})
                out.append(merge_nvml(info))
        cuda.select_device(self.device_index)
        self._devices = out
        return out

    def versions(self):
        import numba

        out = {"numba": numba.__version__}
        try:
            out["numba-cuda"] = version("numba-cuda")
        except Exception:
            out["numba-cuda"] = None
        if not self.simulated:
            v = cuda.runtime.get_version()
            out["cuda_runtime"] = f"{v[0]}.{v[1]}"
        return out

    # arrays
    def to_device(self, host):
        return cuda.to_device(np.ascontiguousarray(host))

    def to_host(self, array):
        return array.copy_to_host()

    def empty(self, shape, dtype):
        return cuda.device_array(shape, dtype=dtype)

    def synchronize(self):
        cuda.synchronize()

    def time_k(self, launch, k):
        if self.simulated:
            cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(k):
                launch()
            cuda.synchronize()
            return time.perf_counter() - t0
        start, end = cuda.event(), cuda.event()
        start.record()
        for _ in range(k):
            launch()
        end.record()
        end.synchronize()
        return cuda.event_elapsed_time(start, end) / 1e3

    # kernels
    def _blocks(self, n: int, threads: int = nk.STREAM_THREADS) -> int:
        cap = 4 if self.simulated else (self.device().sm_count or 80) * 16
        return int(max(1, min(-(-n // threads), cap)))

    def gemv_launcher(self, w, x, y, batch, dtype) -> Callable[[], None]:
        if dtype not in self.gemv_dtypes:
            raise InputError(f"--dtype: the {self.name} backend has no {dtype} GEMV (it has "
                             f"{', '.join(self.gemv_dtypes)})")
        if batch > nk.GEMV_MAX_BATCH:
            raise InputError(f"--batch: at most {nk.GEMV_MAX_BATCH} (got {batch})")
        m = w.shape[0]
        kernel, block = (nk.gemv_sim, nk.GEMV_BLOCK_SIM) if self.simulated else (nk.gemv, nk.GEMV_BLOCK)
        kernel = kernel[-(-m // block[1]), block]
        return lambda: kernel(w, x, y, np.int32(batch))

    def stream_partials(self, n_words):
        return self._blocks(n_words, nk.READ_THREADS)

    def stream_launcher(self, kind, arrays) -> Callable[[], None]:
        first = arrays["a"] if kind == "triad" else arrays["dst" if kind == "write" else "src"]
        threads = nk.READ_THREADS if kind == "read" else nk.STREAM_THREADS
        launch = getattr(nk, f"stream_{kind}")[self._blocks(first.shape[0], threads), threads]
        if kind == "copy":
            args = (arrays["src"], arrays["dst"])
        elif kind == "read":
            args = (arrays["src"], arrays["partial"])
        elif kind == "write":
            args = (arrays["dst"], np.uint32(arrays["seed"]))
        else:
            args = (arrays["a"], arrays["b"], arrays["c"], np.float32(arrays["scalar"]))
        return lambda: launch(*args)

    def gemm_modes(self):
        what = f"numba-cuda tiled shared-memory GEMM ({nk.GEMM_TILE}x{nk.GEMM_TILE} tiles, CUDA cores), fp32 output"
        return {"fp32": what, "fp16_fp32acc": what}

    def gemm_output_dtype(self, mode):
        return "fp32"

    def gemm_launcher(self, a, b, c, mode) -> Callable[[], None]:
        m, n = a.shape[0], b.shape[1]
        grid = (-(-n // nk.GEMM_TILE), -(-m // nk.GEMM_TILE))
        kernel = nk.gemm_tiled[grid, (nk.GEMM_TILE, nk.GEMM_TILE)]
        return lambda: kernel(a, b, c)
