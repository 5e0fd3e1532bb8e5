"""The ``numba`` backend (real GPU through numba-cuda) and the ``simulator`` backend (the same kernels on
the CPU with ``NUMBA_ENABLE_CUDASIM=1``).

The simulator runs each thread as a Python thread: it checks that kernels compute the right thing, at
tiny sizes. It has one device, no warp intrinsics and no event timing (its events return -1), so it
times with the host clock, and its results are labelled ``simulated``: never GPU figures.
bf16 is not offered here (Numba has no bf16 arithmetic in the simulator); the GEMM is the tiled
shared-memory kernel on CUDA cores, fp32 accumulate and fp32 output, in every mode it offers (the decode
GEMM is the same kernel storing C in the dtype of its inputs). The decode kernels are ``numba_decode.py``'s;
numba-cuda has no CUDA graph capture and no NCCL, so decode layers run eagerly and there is no all-reduce.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import version

import numpy as np
from numba import cuda  # noqa: TID253 - a backend module: imported only where that backend is selected

from gpucal.errors import InputError
from gpucal.kernels import numba_decode as nd  # noqa: TID253 - a backend module: imported only where that backend is selected
from gpucal.kernels import numba_kernels as nk  # noqa: TID253 - a backend module: imported only where that backend is selected
from gpucal.kernels.base import Backend, DeviceInfo, merge_nvml
from gpucal.kernels.decode_ref import qkv_width
from gpucal.kernels.dtypes import DTYPES

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


def _configured(kernel, grid, block, args) -> Callable[[], None]:
    """A launch of ``kernel`` over ``grid`` x ``block`` with ``args``, configured at each call: the simulator's
    kernel objects keep one configuration (``kernel[grid, block]`` sets it on the kernel itself), so a
    configuration made once would be overwritten by the next launcher of the same kernel."""
    def launch():
        kernel[grid, block](*args)
    return launch


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
        return _configured(kernel, -(-m // block[1]), block, (w, x, y, np.int32(batch)))

    def stream_partials(self, n_words):
        return self._blocks(n_words, nk.READ_THREADS)

    def stream_launcher(self, kind, arrays) -> Callable[[], None]:
        first = arrays["a"] if kind == "triad" else arrays["dst" if kind == "write" else "src"]
        threads = nk.READ_THREADS if kind == "read" else nk.STREAM_THREADS
        kernel, blocks = getattr(nk, f"stream_{kind}"), self._blocks(first.shape[0], threads)
        if kind == "copy":
            args = (arrays["src"], arrays["dst"])
        elif kind == "read":
            args = (arrays["src"], arrays["partial"])
        elif kind == "write":
            args = (arrays["dst"], np.uint32(arrays["seed"]))
        else:
            args = (arrays["a"], arrays["b"], arrays["c"], np.float32(arrays["scalar"]))
        return _configured(kernel, blocks, threads, args)

    def gemm_modes(self):
        what = f"numba-cuda tiled shared-memory GEMM ({nk.GEMM_TILE}x{nk.GEMM_TILE} tiles, CUDA cores), fp32 output"
        return {"fp32": what, "fp16_fp32acc": what}

    def gemm_output_dtype(self, mode):
        return "fp32"

    def gemm_launcher(self, a, b, c, mode) -> Callable[[], None]:
        m, n = a.shape[0], b.shape[1]
        grid = (-(-n // nk.GEMM_TILE), -(-m // nk.GEMM_TILE))
        return _configured(nk.gemm_tiled, grid, (nk.GEMM_TILE, nk.GEMM_TILE), (a, b, c))

    # decode kernels (numba_decode.py; what each computes: decode_ref.py)
    decode_dtypes = ("fp16", "fp32")

    def decode_reason(self):
        return None

    def _decode_dtype(self, dtype: str, *arrays) -> None:
        """Refuse a dtype this backend has no decode kernels for, or arrays not stored in it."""
        if dtype not in self.decode_dtypes:
            raise InputError(f"--dtype: the {self.name} backend has no {dtype} decode kernels (it has "
                             f"{', '.join(self.decode_dtypes)}; Numba has no bf16)")
        storage = DTYPES[dtype].storage
        for array in arrays:
            if np.dtype(array.dtype) != storage:
                raise ValueError(f"a {dtype} decode kernel got an array of {np.dtype(array.dtype)}")

    def attention_launcher(self, q, k_cache, v_cache, out, dtype, context) -> Callable[[], None]:
        self._decode_dtype(dtype, q, k_cache, v_cache, out)
        batch, heads, head_dim = q.shape
        kv_heads, t_max = k_cache.shape[1], k_cache.shape[2]
        threads, _, d_max = nd.ATTENTION_BLOCK_SIM if self.simulated else nd.ATTENTION_BLOCK
        if head_dim > d_max:
            raise InputError(f"head dimension: the {self.name} attention kernel takes at most {d_max} (got {head_dim})")
        if heads % kv_heads:
            raise InputError(f"KV heads: {kv_heads} does not divide the {heads} query heads")
        if not 1 <= context <= t_max:
            raise InputError(f"context: must be between 1 and the cache's {t_max} positions (got {context})")
        args = (q, k_cache, v_cache, out, np.int32(context), np.float32(1.0 / np.sqrt(head_dim)))
        return _configured(nd.attention_sim if self.simulated else nd.attention, (batch, heads), threads, args)

    def add_rmsnorm_launcher(self, x, residual, weight, out, residual_out, dtype, eps) -> Callable[[], None]:
        self._decode_dtype(dtype, x, residual, weight, out, residual_out)
        threads = nd.NORM_THREADS_SIM if self.simulated else nd.NORM_THREADS
        args = (x, residual, weight, out, residual_out, np.float32(eps))
        return _configured(nd.add_rmsnorm_sim if self.simulated else nd.add_rmsnorm, x.shape[0], threads, args)

    def _flat(self, n: int):
        """(blocks, threads) of a grid-stride kernel over ``n`` items."""
        threads = nd.FLAT_THREADS_SIM if self.simulated else nd.FLAT_THREADS
        return self._blocks(n, threads), threads

    def rotary_launcher(self, qkv, cos_sin, q, k_cache, v_cache, position, dtype, heads, kv_heads,
                        head_dim) -> Callable[[], None]:
        self._decode_dtype(dtype, qkv, q, k_cache, v_cache)
        batch = qkv.shape[0]
        if head_dim % 2:
            raise InputError(f"head dimension: rotary needs an even head dimension (got {head_dim})")
        if qkv.shape[1] != qkv_width(heads, kv_heads, head_dim) or tuple(q.shape) != (batch, heads, head_dim) \
                or tuple(k_cache.shape[:2]) != (batch, kv_heads) or k_cache.shape[3] != head_dim:
            raise ValueError(f"rotary: shapes qkv {qkv.shape}, q {q.shape}, cache {k_cache.shape} do not match "
                             f"B={batch}, H_q={heads}, H_kv={kv_heads}, D={head_dim}")
        if not 0 <= position < k_cache.shape[2]:
            raise InputError(f"position: must be below the cache's {k_cache.shape[2]} positions (got {position})")
        table = self.to_device(np.asarray(cos_sin, dtype=np.float32)) if isinstance(cos_sin, np.ndarray) else cos_sin
        n = batch * (heads + kv_heads) * (head_dim // 2) + batch * kv_heads * head_dim
        args = (qkv, table, q, k_cache, v_cache, np.int32(position))
        return _configured(nd.rotary, *self._flat(n), args)

    def silu_mul_launcher(self, gate_up, out, dtype) -> Callable[[], None]:
        self._decode_dtype(dtype, gate_up, out)
        if gate_up.shape[0] != out.shape[0] or gate_up.shape[1] != 2 * out.shape[1]:
            raise ValueError(f"silu_mul: gate_up {gate_up.shape} must be (B, 2F) for out {out.shape}")
        return _configured(nd.silu_mul, *self._flat(out.shape[0] * out.shape[1]), (gate_up, out))

    def tick_launcher(self, counter) -> Callable[[], None]:
        return _configured(nd.tick, 1, 1, (counter,))

    def decode_gemm_dtypes(self):
        return ("fp16", "fp32")

    def decode_gemm_launcher(self, a, w, c, dtype) -> Callable[[], None]:
        """The tiled GEMM with C stored in ``dtype`` (fp16 rounded to nearest, or fp32), fp32 accumulation."""
        if dtype not in self.decode_gemm_dtypes():
            raise InputError(f"--dtype: the {self.name} backend has no {dtype} decode GEMM (it has "
                             f"{', '.join(self.decode_gemm_dtypes())})")
        self._decode_dtype(dtype, a, w, c)
        return self.gemm_launcher(a, w, c, "fp32" if dtype == "fp32" else "fp16_fp32acc")

    def graph_reason(self):
        return ("the Numba CUDA simulator has no CUDA graphs" if self.simulated else
                "numba-cuda cannot capture CUDA graphs (it has no stream-capture API): kernels launch eagerly")

    def host_roundtrip_s(self, launch, k):
        cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(k):
            launch()
            cuda.synchronize()
        return time.perf_counter() - t0

    def allreduce_reason(self, devices):
        return (f"the {self.name} backend has no all-reduce over the devices of one process (numba-cuda has no "
                "NCCL binding; use --backend cupy)")
