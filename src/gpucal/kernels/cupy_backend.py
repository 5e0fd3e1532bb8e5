"""The ``cupy`` backend: RawKernels from ``cuda_src.py`` and ``decode_src.py``, cuBLAS (``cublasGemmEx``) and
NCCL (``cupy_nccl.py``) through CuPy.

GEMMs call ``cublasGemmEx`` directly so that the input, output and compute types are the mode's, not
whatever ``cupy.matmul`` would pick (and bf16, which NumPy/CuPy have no dtype for, is held as uint16).
Row-major C = A·B is computed as the column-major Cᵀ = Bᵀ·Aᵀ, so no transposition is needed. Each GEMM
call sets the cuBLAS handle's stream to the current stream, so that a GEMM can be captured in a CUDA graph.

Decode kernels (``decode_src.py``, a small module per kernel and device, compiled at first use): attention
splits the context so that B·H_kv·splits blocks are about ``ATTENTION_BLOCKS_PER_SM`` per SM (two waves
of two), each split a multiple of ``ATTENTION_SPLIT_STEP`` and at least ``ATTENTION_MIN_SPLIT`` positions
(``attention_plan``); its fp32 workspace is allocated once per launcher. CUDA graphs: each distinct launch
runs once eagerly (modules load, cuBLAS sets up), then all are captured on a non-blocking stream; a replay
runs on the current stream. Arrays, fills and timings are made on this backend's device explicitly.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import cupy  # noqa: TID253 - a backend module: imported only where that backend is selected
import numpy as np
from cupy_backends.cuda.api import runtime as _rt  # noqa: TID253 - a backend module: imported only where that backend is selected

from gpucal.errors import GpucalError, InputError
from gpucal.kernels import cupy_nccl  # noqa: TID253 - a backend module: imported only where that backend is selected
from gpucal.kernels.base import Backend, DeviceInfo, merge_nvml
from gpucal.kernels.cuda_src import (GEMV_BATCHES, GEMV_DTYPES, GEMV_SHAPES, GEMV_THREADS, gemv_kernel_name,
                                     gemv_rows_per_block, gemv_variant_name)
from gpucal.kernels.cupy_links import BlockedStart, CupyLinks  # noqa: TID253 - a backend module: imported only where that backend is selected
from gpucal.kernels.decode_ref import qkv_width
from gpucal.kernels.decode_src import (ATTENTION_HEAD_DIMS, ATTENTION_THREADS, DECODE_KERNEL_DTYPES,
                                       attention_combine_name, attention_group_bound, attention_kernel_name,
                                       decode_kernel_name, decode_module_source)
from gpucal.kernels.dtypes import DTYPES
from gpucal.kernels.reference import GEMM_MODES

__all__ = ["CupyBackend", "cupy_status", "BlockedStart", "attention_plan", "ATTENTION_BLOCKS_PER_SM",
           "ATTENTION_SPLIT_STEP", "ATTENTION_MIN_SPLIT"]

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
ATTENTION_BLOCKS_PER_SM = 4  # attention blocks wanted per SM: two waves of two resident blocks
ATTENTION_SPLIT_STEP = 64  # split lengths are multiples of this many positions
ATTENTION_MIN_SPLIT = 256  # and at least this long: per split G·D fp32 of workspace, small beside its K and V
_GRID_YZ_MAX = 65535


def attention_plan(batch: int, kv_heads: int, context: int, sm_count: int) -> tuple[int, int]:
    """(splits, split length) of decode attention: enough splits that B·H_kv·splits reaches
    ``ATTENTION_BLOCKS_PER_SM``·SMs blocks, each a multiple of ``ATTENTION_SPLIT_STEP`` positions and at least
    ``ATTENTION_MIN_SPLIT``; every split holds at least one position."""
    if batch < 1 or kv_heads < 1 or context < 1:
        raise ValueError(f"attention: batch, kv_heads and context must be positive, got {batch}, {kv_heads}, {context}")
    wanted = max(1, -(-ATTENTION_BLOCKS_PER_SM * max(sm_count, 1) // (batch * kv_heads)))
    length = -(-context // wanted)
    length = max(ATTENTION_MIN_SPLIT, -(-length // ATTENTION_SPLIT_STEP) * ATTENTION_SPLIT_STEP)
    return -(-context // length), length


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


def _storage(name: str, array, dtype: str) -> None:
    """``array`` holds ``dtype`` in its storage type, C-contiguous (what the kernels index)."""
    want = DTYPES[dtype].storage
    _require(array.dtype == want and array.flags.c_contiguous,
             f"{name}: a contiguous {want} array ({dtype}) is needed, got {array.dtype}")


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
    decode_dtypes = DECODE_KERNEL_DTYPES

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
        with cupy.cuda.Device(self.device_index):
            return cupy.asarray(host)

    def to_host(self, array):
        return cupy.asnumpy(array)

    def to_xp(self, array):
        return array

    def full(self, shape, dtype, value):
        with cupy.cuda.Device(self.device_index):
            return cupy.full(shape, value, dtype=dtype)

    def empty(self, shape, dtype):
        with cupy.cuda.Device(self.device_index):
            return cupy.empty(shape, dtype=dtype)

    def copy_array(self, array):
        with cupy.cuda.Device(self.device_index):
            return array.copy()

    def fill(self, array, value):
        with cupy.cuda.Device(array.device.id):
            array.fill(value)

    def random_uniform(self, shape, dtype_name, seed, scale=1.0):
        with cupy.cuda.Device(self.device_index):
            values = (cupy.random.default_rng(seed).random(shape, dtype=cupy.float32) * 2.0 - 1.0) * np.float32(scale)
            if dtype_name == "bf16":
                bits = values.view(cupy.uint32)
                return ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(cupy.uint16)
            return values.astype(DTYPES[dtype_name].storage)

    def random_words(self, n_words, seed):
        with cupy.cuda.Device(self.device_index):
            return cupy.random.default_rng(seed).integers(0, 2**32, n_words, dtype=cupy.uint64).astype(cupy.uint32)

    def synchronize(self):
        cupy.cuda.get_current_stream().synchronize()

    def time_k(self, launch, k):
        """CUDA events on this backend's device's current stream around ``k`` launches."""
        with cupy.cuda.Device(self.device_index):
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
        """``variant``: (engine, rows per warp, unroll) of an instance in ``GEMV_VARIANTS`` (benchmarks) at the
        batch bound that ``batch`` rounds up to; by default the dtype's ``GEMV_SHAPES``."""
        m, k = w.shape
        per_vec = 16 // w.dtype.itemsize
        if k % per_vec:
            raise InputError(f"--sizes: the CuPy GEMV needs k divisible by {per_vec} for {dtype} (got k={k})")
        if not 1 <= batch <= GEMV_BATCHES[-1]:
            raise InputError(f"--batches: the CuPy GEMV runs batch 1 to {GEMV_BATCHES[-1]} (got {batch})")
        max_batch = next(b for b in GEMV_BATCHES if b >= batch)
        if variant:
            fn = self.kernel(gemv_variant_name(dtype, max_batch, *variant))
            engine, rows = variant[0], variant[1]
        else:
            fn = self.kernel(gemv_kernel_name(dtype, max_batch))
            engine, rows, _ = GEMV_SHAPES[dtype]
        grid = (-(-m // gemv_rows_per_block(engine, rows)),)
        args = (w, x, y, np.int32(m), np.int32(k // per_vec), np.int32(batch))
        return lambda: fn(grid, (GEMV_THREADS,), args)

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
            cublas.setStream(handle, cupy.cuda.get_current_stream().ptr)  # the current stream: capturable
            cublas.gemmEx(handle, _OP_N, _OP_N, n, m, k, alpha.ctypes.data, b.data.ptr, t_in, n,
                          a.data.ptr, t_in, k, beta.ctypes.data, c.data.ptr, t_out, n, compute, _GEMM_DEFAULT)
        return launch

    # decode kernels ----------------------------------------------------------------------------------
    def decode_kernel(self, name: str):
        """A kernel of ``decode_src.DECODE_SOURCE`` on this backend's device: its own small module
        (``decode_module_source``), loaded once per device."""
        modules = self.__dict__.setdefault("_decode_modules", {})
        code = decode_module_source(name)
        key = (self.device_index, code)
        if key not in modules:
            with cupy.cuda.Device(self.device_index):
                modules[key] = cupy.RawModule(code=code, options=("--std=c++14",))
        return modules[key].get_function(name)

    def _decode_dtype(self, dtype: str) -> None:
        if dtype not in self.decode_dtypes:
            raise GpucalError(f"the cupy backend's decode kernels run {', '.join(self.decode_dtypes)}, not {dtype}")

    def decode_reason(self):
        return None

    def attention_splits(self, batch, kv_heads, context):
        return attention_plan(batch, kv_heads, context, self.device().sm_count or 80)[0]

    def attention_launcher(self, q, k_cache, v_cache, out, dtype, context) -> Callable[[], None]:
        """Blocks (split, KV head, sequence); with more than one split the combine kernel follows (module
        docstring); the workspace is this launcher's."""
        self._decode_dtype(dtype)
        for name, a in (("q", q), ("k_cache", k_cache), ("v_cache", v_cache), ("out", out)):
            _storage(name, a, dtype)
        _require(q.ndim == 3 and k_cache.ndim == 4, "attention: q is (B, H_q, D) and the caches (B, H_kv, T_max, D)")
        batch, heads, head_dim = q.shape
        _, kv_heads, t_max, _ = k_cache.shape
        _require(k_cache.shape == (batch, kv_heads, t_max, head_dim) and v_cache.shape == k_cache.shape
                 and out.shape == q.shape, f"attention: shapes q {q.shape}, caches {k_cache.shape}/{v_cache.shape}, "
                 f"out {out.shape} do not agree")
        _require(heads % kv_heads == 0, f"attention: H_q ({heads}) must be a multiple of H_kv ({kv_heads})")
        _require(1 <= context <= t_max, f"attention: context must be in 1..{t_max}, got {context}")
        group = heads // kv_heads
        bound = attention_group_bound(group)
        if head_dim not in ATTENTION_HEAD_DIMS or bound is None:
            raise GpucalError(f"the cupy attention kernel takes head_dim {' or '.join(map(str, ATTENTION_HEAD_DIMS))} "
                              f"and at most 16 query heads per KV head (got head_dim {head_dim}, {group} per KV head)")
        if batch > _GRID_YZ_MAX or kv_heads > _GRID_YZ_MAX:
            raise GpucalError(f"the cupy attention kernel launches at most {_GRID_YZ_MAX} sequences and KV heads")
        splits, length = attention_plan(batch, kv_heads, context, self.device().sm_count or 80)
        fn = self.decode_kernel(attention_kernel_name(dtype, head_dim, bound))
        grid, block = (splits, kv_heads, batch), (ATTENTION_THREADS,)
        sizes = (np.int32(context), np.int32(t_max), np.int32(length), np.int32(group))
        with cupy.cuda.Device(self.device_index):
            if splits == 1:
                none = cupy.empty(1, dtype=cupy.float32)  # the workspace is not touched with one split
                args = (q, k_cache, v_cache, out, none, none, none) + sizes
                return lambda: fn(grid, block, args)
            parts = batch * heads * splits
            ws_o = cupy.empty(parts * head_dim, dtype=cupy.float32)
            ws_ml = cupy.empty(2 * parts, dtype=cupy.float32)
        ws_m, ws_l = ws_ml[:parts], ws_ml[parts:]
        args = (q, k_cache, v_cache, out, ws_o, ws_m, ws_l) + sizes
        combine = self.decode_kernel(attention_combine_name(dtype))
        combine_args = (ws_o, ws_m, ws_l, out, np.int32(splits), np.int32(head_dim))

        def launch():
            fn(grid, block, args)
            combine((heads, batch), (head_dim,), combine_args)
        return launch

    def add_rmsnorm_launcher(self, x, residual, weight, out, residual_out, dtype, eps) -> Callable[[], None]:
        """One block per row: h/8 threads (h % 8 == 0: 16-byte vectors) or h threads, 32 to 1024."""
        self._decode_dtype(dtype)
        for name, a in (("x", x), ("residual", residual), ("weight", weight), ("out", out),
                        ("residual_out", residual_out)):
            _storage(name, a, dtype)
        _require(x.ndim == 2 and x.shape[0] >= 1, f"add_rmsnorm: x is (B, h), got {x.shape}")
        batch, hidden = x.shape
        _require(residual.shape == out.shape == residual_out.shape == x.shape and weight.shape == (hidden,),
                 f"add_rmsnorm: shapes x {x.shape}, residual {residual.shape}, weight {weight.shape}, out {out.shape}, "
                 f"residual_out {residual_out.shape} do not agree")
        per_thread = hidden // 8 if hidden % 8 == 0 else hidden
        threads = int(min(1024, max(32, -(-per_thread // 32) * 32)))
        fn = self.decode_kernel(decode_kernel_name("add_rmsnorm", dtype))
        args = (x, residual, weight, out, residual_out, np.int32(hidden), np.float32(eps))
        return lambda: fn((batch,), (threads,), args)

    def rotary_launcher(self, qkv, cos_sin, q, k_cache, v_cache, position, dtype, heads, kv_heads,
                        head_dim) -> Callable[[], None]:
        """One block per (head of qkv, sequence), a thread per rotated pair (at most 256)."""
        self._decode_dtype(dtype)
        for name, a in (("qkv", qkv), ("q", q), ("k_cache", k_cache), ("v_cache", v_cache)):
            _storage(name, a, dtype)
        _require(cos_sin.dtype == cupy.float32 and cos_sin.shape == (head_dim,) and cos_sin.flags.c_contiguous,
                 f"rotary: cos_sin is ({head_dim},) float32, got {cos_sin.shape} {cos_sin.dtype}")
        _require(head_dim % 2 == 0 and head_dim >= 2, f"rotary: head_dim must be even, got {head_dim}")
        batch = qkv.shape[0]
        t_max = k_cache.shape[2] if k_cache.ndim == 4 else 0
        _require(qkv.shape == (batch, qkv_width(heads, kv_heads, head_dim)) and q.shape == (batch, heads, head_dim)
                 and k_cache.shape == (batch, kv_heads, t_max, head_dim) and v_cache.shape == k_cache.shape,
                 f"rotary: shapes qkv {qkv.shape}, q {q.shape}, caches {k_cache.shape}/{v_cache.shape} do not agree "
                 f"with {heads} heads, {kv_heads} KV heads of {head_dim}")
        _require(0 <= position < t_max, f"rotary: position must be in 0..{t_max - 1}, got {position}")
        if batch > _GRID_YZ_MAX:
            raise GpucalError(f"the cupy rotary kernel launches at most {_GRID_YZ_MAX} sequences")
        threads = int(min(256, max(32, -(-(head_dim // 2) // 32) * 32)))
        fn = self.decode_kernel(decode_kernel_name("rotary", dtype))
        grid = (heads + 2 * kv_heads, batch)
        args = (qkv, cos_sin, q, k_cache, v_cache, np.int32(position), np.int32(heads), np.int32(kv_heads),
                np.int32(head_dim), np.int32(t_max))
        return lambda: fn(grid, (threads,), args)

    def silu_mul_launcher(self, gate_up, out, dtype) -> Callable[[], None]:
        """Grid-stride over 8 outputs a thread (F % 8 == 0) or one, two waves of resident threads."""
        self._decode_dtype(dtype)
        _storage("gate_up", gate_up, dtype)
        _storage("out", out, dtype)
        _require(gate_up.ndim == 2 and gate_up.shape[1] % 2 == 0
                 and out.shape == (gate_up.shape[0], gate_up.shape[1] // 2),
                 f"silu_mul: gate_up is (B, 2F) and out (B, F), got {gate_up.shape} and {out.shape}")
        batch, ffn = out.shape
        work = batch * ffn // 8 if ffn % 8 == 0 else batch * ffn
        fn = self.decode_kernel(decode_kernel_name("silu_mul", dtype))
        grid, args = (self._blocks(work),), (gate_up, out, np.int32(batch), np.int32(ffn))
        return lambda: fn(grid, (THREADS,), args)

    def tick_launcher(self, counter) -> Callable[[], None]:
        _require(counter.dtype == cupy.uint32 and counter.size >= 1, "tick: counter is a uint32 array")
        fn = self.decode_kernel("tick")
        return lambda: fn((1,), (1,), (counter,))

    # CUDA graphs, the host's round trip ------------------------------------------------------------
    def graph_reason(self):
        return None

    def graph_launcher(self, launches) -> Callable[[], None]:
        """Each distinct launch runs once eagerly first (module loads, cuBLAS set-up: nothing of that may
        happen in a capture), so outputs are to be poisoned after this call; then the launches are captured
        once, in order, on a non-blocking stream; the result replays the graph on the current stream."""
        steps = tuple(launches)
        if not steps:
            raise ValueError("graph: no launches to capture")
        with cupy.cuda.Device(self.device_index):
            for step in {id(step): step for step in steps}.values():
                step()
            cupy.cuda.Device().synchronize()
            stream = cupy.cuda.Stream(non_blocking=True)
            try:
                with stream:
                    stream.begin_capture()
                    try:
                        for step in steps:
                            step()
                    except BaseException:
                        try:  # end the (invalidated) capture, so that the stream is usable again
                            stream.end_capture()
                        except Exception:
                            pass
                        raise
                    graph = stream.end_capture()
                graph.upload(stream)
                stream.synchronize()
            except Exception as exc:
                raise GpucalError(f"the launches could not be captured into a CUDA graph ({type(exc).__name__}: "
                                  f"{exc})") from exc

        def replay(keep=(steps, stream)):  # what the graph's nodes point at stays alive with the closure
            graph.launch(stream=cupy.cuda.get_current_stream())
        return replay

    def host_roundtrip_s(self, launch, k):
        """``time.perf_counter`` around k × (launch, then synchronize the current stream)."""
        with cupy.cuda.Device(self.device_index):
            stream = cupy.cuda.get_current_stream()
            start = time.perf_counter()
            for _ in range(k):
                launch()
                stream.synchronize()
            return time.perf_counter() - start

    # all-reduce over devices of this process (cupy_nccl.py) ----------------------------------------
    def allreduce_reason(self, devices):
        return cupy_nccl.allreduce_reason(tuple(devices))

    def allreduce_library(self):
        return cupy_nccl.library()

    def _timed_here(self, devices) -> None:
        """``time_k`` records on this backend's device, which must take part: an all-reduce ends on every
        member together, so any member's clock (``devices[0]``'s, in the interface) sees all of it."""
        if self.device_index not in tuple(devices):
            raise GpucalError(f"an all-reduce over devices {list(devices)} is timed on one of them: ask the backend "
                              f"of device {list(devices)[0]} (this one runs on device {self.device_index})")

    def allreduce_launcher(self, devices, sends, recvs) -> Callable[[], None]:
        self._timed_here(devices)
        return cupy_nccl.allreduce_launcher(tuple(devices), sends, recvs)

    def allreduce_graph_launcher(self, devices, sends, recvs, count) -> Callable[[], None]:
        self._timed_here(devices)
        return cupy_nccl.allreduce_graph_launcher(tuple(devices), sends, recvs, count)
