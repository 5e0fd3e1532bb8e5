"""The ``cupy`` backend: RawKernels from ``cuda_src.py`` and cuBLAS (``cublasGemmEx``) through CuPy.

GEMMs call ``cublasGemmEx`` directly so that the input, output and compute types are the mode's, not
whatever ``cupy.matmul`` would pick (and bf16, which NumPy/CuPy have no dtype for, is held as uint16).
Row-major C = A·B is computed as the column-major Cᵀ = Bᵀ·Aᵀ, so no transposition is needed.
"""

from __future__ import annotations

from collections.abc import Callable

import cupy  # noqa: TID253 - a backend module: imported only where that backend is selected
import numpy as np
from cupy_backends.cuda.api import runtime as _rt  # noqa: TID253 - a backend module: imported only where that backend is selected

from gpucal.errors import InputError
from gpucal.kernels.base import Backend, DeviceInfo, merge_nvml
from gpucal.kernels.cuda_src import GEMV_BATCHES, GEMV_DTYPES, GEMV_ROWS_PER_WARP, gemv_kernel_name, gemv_variant_name
from gpucal.kernels.cupy_links import BlockedStart, CupyLinks  # noqa: TID253 - a backend module: imported only where that backend is selected
from gpucal.kernels.dtypes import DTYPES
from gpucal.kernels.reference import GEMM_MODES

__all__ = ["CupyBackend", "cupy_status", "BlockedStart"]

# cuBLAS / CUDA library enums (library_types.h, cublas_api.h)
_CUDA_R = {"fp16": 2, "fp32": 0, "fp64": 1, "bf16": 14}
_COMPUTE_16F, _COMPUTE_32F_PEDANTIC, _COMPUTE_32F, _COMPUTE_32F_FAST_TF32, _COMPUTE_64F = 64, 69, 68, 77, 70
_GEMM_DEFAULT = -1
_OP_N = 0
_GEMM_COMPUTE = {  # mode -> (compute type, scale dtype, what runs)
    "fp64": (_COMPUTE_64F, np.float64, "cublasGemmEx CUBLAS_COMPUTE_64F"),
    "fp32": (_COMPUTE_32F_PEDANTIC, np.float32, "cublasGemmEx CUBLAS_COMPUTE_32F_PEDANTIC"),
    "tf32": (_COMPUTE_32F_FAST_TF32, np.float32, "cublasGemmEx CUBLAS_COMPUTE_32F_FAST_TF32"),
    "fp16_fp32acc": (_COMPUTE_32F, np.float32, "cublasGemmEx fp16 in/out, CUBLAS_COMPUTE_32F"),
    "bf16_fp32acc": (_COMPUTE_32F, np.float32, "cublasGemmEx bf16 in/out, CUBLAS_COMPUTE_32F"),
    "fp16_fp16acc": (_COMPUTE_16F, np.float16, "cublasGemmEx fp16 in/out, CUBLAS_COMPUTE_16F"),
}
THREADS = 256
CUBLAS_WORKSPACE_BYTES = 32 << 20  # what cuBLAS documents for Hopper; ample for the older GPUs
COPY_KERNEL, COPY_WAVES = "copy_plain_plain_u4", 128  # fastest against the driver's memcpy (docs/measurements.md)


def cupy_status() -> tuple[bool, str]:
    try:
        count = _rt.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError: no driver (35), no device (100), ...
        return False, f"no device ({exc})"
    if count == 0:
        return False, "no device (0 CUDA devices)"
    return True, f"CuPy {cupy.__version__}, {count} device(s)"


class CupyBackend(CupyLinks, Backend):
    name = "cupy"
    clock = "cuda-events"
    xp = cupy
    gemv_dtypes = GEMV_DTYPES

    def __init__(self, device: int = 0):
        count = _rt.getDeviceCount()
        if not 0 <= device < count:
            raise InputError(f"--device: device {device} does not exist (this machine has {count})")
        self.device_index = device
        cupy.cuda.Device(device).use()
        self._devices = None
        self._workspace = None
        self.copy_kernel, self.copy_waves = COPY_KERNEL, COPY_WAVES  # grid = waves × the blocks resident

    # devices -------------------------------------------------------------------------------------

    def activate(self) -> None:
        cupy.cuda.Device(self.device_index).use()

    def release_memory(self) -> None:
        with cupy.cuda.Device(self.device_index):
            cupy.cuda.Device().synchronize()
            cupy.get_default_memory_pool().free_all_blocks()

    def _info(self, i: int) -> DeviceInfo:
        props = _rt.getDeviceProperties(i)
        attr = _rt.deviceGetAttribute
        def a(code):
            try:
                return attr(code, i)
            except Exception:
                return None
        uuid = props.get("uuid")
        if isinstance(uuid, (bytes, bytearray)) and len(uuid) == 16:
            h = uuid.hex()
            uuid = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
        mem_khz, bus = a(36), a(37)  # cudaDevAttrMemoryClockRate (kHz), cudaDevAttrGlobalMemoryBusWidth
        name = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        info = DeviceInfo(
            index=i, name=name, uuid=uuid if isinstance(uuid, str) else None,
            compute_capability=f"{props['major']}.{props['minor']}", sm_count=props["multiProcessorCount"],
            memory_bytes=int(props["totalGlobalMem"]), l2_bytes=int(props["l2CacheSize"]),
            memory_clock_hz=mem_khz * 1e3 if mem_khz else None, memory_bus_width_bits=bus,
            pci_bus_id=_rt.deviceGetPCIBusId(i),
            sources={k: "runtime" for k in ("name", "compute_capability", "sm_count", "memory_bytes", "l2_bytes",
                                             "memory_clock_hz", "memory_bus_width_bits", "pci_bus_id")})
        return merge_nvml(info)

    def devices(self) -> list[DeviceInfo]:
        if self._devices is None:
            self._devices = [self._info(i) for i in range(_rt.getDeviceCount())]
        return self._devices

    def versions(self) -> dict[str, str | None]:
        def v(x):
            return f"{x // 1000}.{x % 1000 // 10}"
        return {"cupy": cupy.__version__, "cuda_runtime": v(_rt.runtimeGetVersion()),
                "cuda_driver": v(_rt.driverGetVersion())}

    # arrays --------------------------------------------------------------------------------------
    def to_device(self, host):
        return cupy.asarray(host)

    def to_host(self, array):
        return cupy.asnumpy(array)

    def to_xp(self, array):
        return array

    def full(self, shape, dtype, value):
        return cupy.full(shape, value, dtype=dtype)

    def empty(self, shape, dtype):
        return cupy.empty(shape, dtype=dtype)

    def random_uniform(self, shape, dtype_name, seed):
        values = cupy.random.default_rng(seed).random(shape, dtype=cupy.float32) * 2.0 - 1.0
        if dtype_name == "bf16":
            bits = values.view(cupy.uint32)
            return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(cupy.uint16)
        return values.astype(DTYPES[dtype_name].storage)

    def random_words(self, n_words, seed):
        return cupy.random.default_rng(seed).integers(0, 2**32, n_words, dtype=cupy.uint64).astype(cupy.uint32)

    def synchronize(self):
        cupy.cuda.get_current_stream().synchronize()

    def time_k(self, launch, k):
        start, end = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        for _ in range(k):
            launch()
        end.record()
        end.synchronize()
        return cupy.cuda.get_elapsed_time(start, end) / 1e3

    # kernels -------------------------------------------------------------------------------------
    def kernel(self, name: str):
        """A kernel of ``cuda_src.SOURCE`` on this backend's device (the module is loaded once per device)."""
        return self.module_on(self.device_index).get_function(name)

    def _blocks(self, n_vec: int, waves: float = 2) -> int:
        """Grid-stride grids: ``waves`` × the blocks resident at once (2048 threads per SM); 0: one
        16-byte vector per thread, no loop."""
        if waves == 0:
            return int(max(1, -(-n_vec // THREADS)))
        sm = self.device().sm_count or 80
        return int(max(1, min(-(-n_vec // THREADS), sm * 2048 // THREADS * waves)))

    def gemv_launcher(self, w, x, y, batch, dtype, variant=None) -> Callable[[], None]:
        """``variant``: (unroll, rows per warp) of a batch-1 instance in ``GEMV_VARIANTS`` (benchmarks)."""
        m, k = w.shape
        per_vec = 16 // w.dtype.itemsize
        if k % per_vec:
            raise InputError(f"--sizes: the CuPy GEMV needs k divisible by {per_vec} for {dtype} (got k={k})")
        max_batch = next(b for b in GEMV_BATCHES if b >= batch)
        if variant:
            fn = self.kernel(gemv_variant_name(dtype, max_batch, *variant))
            rows_per_block = THREADS // 32 * variant[1]
        else:
            fn = self.kernel(gemv_kernel_name(dtype, max_batch))
            rows_per_block = THREADS // 32 * GEMV_ROWS_PER_WARP
        grid, args = (-(-m // rows_per_block),), (w, x, y, np.int32(m), np.int32(k // per_vec), np.int32(batch))
        return lambda: fn(grid, (THREADS,), args)

    def stream_partials(self, n_words):
        return self._blocks(n_words // 4)

    def stream_launcher(self, kind, arrays) -> Callable[[], None]:
        first = arrays["a"] if kind == "triad" else arrays["dst" if kind == "write" else "src"]
        if first.nbytes % 16:
            raise InputError(f"--sizes: stream buffers must hold a multiple of 16 bytes (got {first.nbytes})")
        n_vec = first.nbytes // 16
        if kind == "copy":
            args = (arrays["src"], arrays["dst"], np.uint64(n_vec))
            fn = self.kernel(self.copy_kernel)
            grid = (self._blocks(n_vec, self.copy_waves),)
            return lambda: fn(grid, (THREADS,), args)
        elif kind == "read":
            args = (arrays["src"], arrays["partial"], np.uint64(n_vec))
        elif kind == "write":
            args = (arrays["dst"], np.uint64(n_vec), np.uint32(arrays["seed"]))
        else:
            args = (arrays["a"], arrays["b"], arrays["c"], np.float32(arrays["scalar"]), np.uint64(n_vec))
        fn, grid = self.kernel(f"stream_{kind}"), (self._blocks(n_vec),)  # read, write, triad
        return lambda: fn(grid, (THREADS,), args)

    def gemm_modes(self):
        from cupy_backends.cuda.libs import cublas  # loads cuBLAS: only where a GEMM is asked for

        version = cublas.getVersion(cupy.cuda.device.get_cublas_handle())
        return {mode: f"cuBLAS {version}: {what}" for mode, (_, _, what) in _GEMM_COMPUTE.items()}

    def gemm_launcher(self, a, b, c, mode) -> Callable[[], None]:
        from cupy_backends.cuda.libs import cublas  # loads cuBLAS: only where a GEMM is asked for


        gm = GEMM_MODES[mode]
        compute, scale, _ = _GEMM_COMPUTE[mode]
        m, k = a.shape
        n = b.shape[1]
        alpha, beta = np.ones(1, dtype=scale), np.zeros(1, dtype=scale)
        handle = cupy.cuda.device.get_cublas_handle()
        if self._workspace is None and hasattr(cublas, "setWorkspace"):
            self._workspace = cupy.empty(CUBLAS_WORKSPACE_BYTES, dtype=cupy.uint8)
            cublas.setWorkspace(handle, self._workspace.data.ptr, CUBLAS_WORKSPACE_BYTES)
        t_in, t_out = _CUDA_R[gm.dtype_in], _CUDA_R[gm.dtype_out]

        def launch(alpha=alpha, beta=beta):  # the scalars stay alive with the closure
            cublas.gemmEx(handle, _OP_N, _OP_N, n, m, k, alpha.ctypes.data, b.data.ptr, t_in, n,
                          a.data.ptr, t_in, k, beta.ctypes.data, c.data.ptr, t_out, n, compute, _GEMM_DEFAULT)
        return launch
