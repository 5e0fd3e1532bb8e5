"""The device interface every backend implements: ``Backend`` (arrays, kernels, copies, their clocks) and
``DeviceInfo`` (the facts about one device, completed from NVML by ``merge_nvml``).

A backend owns arrays, launches kernels and times ``k`` launches; it knows nothing of statistics. The copy
probes' part of the interface (buffers, copies, their clocks) is described in ``kernels/links.py``; which
backend runs is chosen in ``kernels/backend.py``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from gpucal.kernels.dtypes import to_storage
from gpucal.kernels.links import Buffer, CopyOp
from gpucal.kernels.nvml import nvml_device_for
from gpucal.kernels.reference import GEMM_MODES

__all__ = ["Backend", "DeviceInfo", "merge_nvml", "decode_gemm_mode"]


def decode_gemm_mode(dtype: str) -> str:
    """The GEMM mode of a decode GEMM in ``dtype``: fp32 accumulation (``fp32`` for fp32)."""
    return "fp32" if dtype == "fp32" else f"{dtype}_fp32acc"


@dataclass(frozen=True)
class DeviceInfo:
    """Facts about one device, each ``None`` where neither NVML nor the runtime can say.

    ``sources`` names, per fact, where it came from (``nvml`` or ``runtime``)."""

    index: int
    name: str
    uuid: str | None = None
    compute_capability: str | None = None
    sm_count: int | None = None
    memory_bytes: int | None = None
    l2_bytes: int | None = None
    memory_clock_hz: float | None = None  # the maximum memory clock
    memory_bus_width_bits: int | None = None
    pci_bus_id: str | None = None
    pcie_generation: int | None = None
    pcie_generation_max: int | None = None
    pcie_width: int | None = None
    pcie_width_max: int | None = None
    sources: dict = field(default_factory=dict)

    @property
    def theoretical_memory_Bps(self) -> float | None:
        """memory clock × bus width × 2 (double data rate), in B/s."""
        if not self.memory_clock_hz or not self.memory_bus_width_bits:
            return None
        return self.memory_clock_hz * self.memory_bus_width_bits / 8.0 * 2.0


def merge_nvml(info: DeviceInfo) -> DeviceInfo:
    """``info`` completed with NVML's facts for the same device (matched by PCI bus id or UUID)."""
    nv = nvml_device_for(info.pci_bus_id, info.uuid)
    if nv is None:
        return info
    updates, sources = {}, dict(info.sources)
    for name in ("uuid", "memory_bus_width_bits", "pcie_generation", "pcie_generation_max", "pcie_width",
                 "pcie_width_max", "memory_bytes"):
        if getattr(info, name) is None and getattr(nv, name) is not None:
            updates[name] = getattr(nv, name)
            sources[name] = "nvml"
    if nv.memory_clock_max_hz:  # NVML's maximum memory clock is the one the peak is quoted at
        updates["memory_clock_hz"] = nv.memory_clock_max_hz
        sources["memory_clock_hz"] = "nvml"
    return replace(info, sources=sources, **updates)


class Backend:
    """The interface every backend implements. Arrays are the backend's own (CuPy, Numba device arrays
    or, on the simulator, its fake device arrays); ``xp`` is the array module references run in."""

    name = "base"
    simulated = False  # True: results are labelled simulated, never presented as measurements
    clock = "host"  # how time_k measures: "cuda-events", "host" or "virtual" (priced by a profile)
    xp = np

    # devices
    def devices(self) -> list[DeviceInfo]:
        raise NotImplementedError

    def device(self) -> DeviceInfo:
        return self.devices()[self.device_index]

    device_index = 0

    def versions(self) -> dict[str, str | None]:
        return {}

    # arrays
    def to_device(self, host: np.ndarray):
        raise NotImplementedError

    def to_host(self, array) -> np.ndarray:
        raise NotImplementedError

    def empty(self, shape, dtype):
        raise NotImplementedError

    def full(self, shape, dtype, value):
        """An array of ``value`` on the device (outputs are poisoned with it before a kernel runs)."""
        return self.to_device(np.full(shape, value, dtype=dtype))

    def copy_array(self, array):
        """A new device array holding what ``array`` holds (a copy of an input, to time over copies in turn)."""
        return self.to_device(self.to_host(array))

    def fill(self, array, value) -> None:
        """Set every element of the device array ``array`` to ``value`` in place (its address kept, so that a
        captured graph still writes it)."""
        if hasattr(array, "copy_to_device"):  # Numba device arrays (and the simulator's)
            array.copy_to_device(np.full(array.shape, value, dtype=array.dtype))
        else:
            array[...] = value

    def to_xp(self, array):
        """A device array as an array of ``xp`` (for references and checks)."""
        return self.to_host(array)

    def random_uniform(self, shape, dtype_name: str, seed: int, scale: float = 1.0):
        """Uniform values in [-scale, scale) rounded to ``dtype_name``, in its storage type, on the device."""
        values = (np.random.default_rng(seed).random(shape, dtype=np.float32) * 2.0 - 1.0) * np.float32(scale)
        return self.to_device(to_storage(values, dtype_name))

    def random_words(self, n_words: int, seed: int):
        """Random 32-bit words on the device."""
        words = np.random.default_rng(seed).integers(0, 2**32, n_words, dtype=np.uint64).astype(np.uint32)
        return self.to_device(words)

    def synchronize(self) -> None:
        raise NotImplementedError

    # timing
    def time_k(self, launch: Callable[[], None], k: int) -> float:
        """Seconds that ``k`` back-to-back calls of ``launch`` take on the device."""
        raise NotImplementedError

    # kernels
    gemv_dtypes: tuple[str, ...] = ()

    def gemv_launcher(self, w, x, y, batch: int, dtype: str) -> Callable[[], None]:
        raise NotImplementedError

    def stream_launcher(self, kind: str, arrays: dict) -> Callable[[], None]:
        raise NotImplementedError

    def stream_partials(self, n_words: int) -> int:
        """How many 32-bit partial results the ``read`` kernel writes for ``n_words``."""
        raise NotImplementedError

    def gemm_modes(self) -> dict[str, str]:
        """GEMM modes this backend runs, each with the library and path that runs it."""
        raise NotImplementedError

    def gemm_launcher(self, a, b, c, mode: str) -> Callable[[], None]:
        raise NotImplementedError

    def gemm_output_dtype(self, mode: str) -> str:
        return GEMM_MODES[mode].dtype_out

    # decode kernels (kernels/decode_ref.py: what each computes, its work and its check) ----------------
    decode_dtypes: tuple[str, ...] = ()  # dtypes of the decode kernels (attention, norms, rotary, silu_mul)

    def decode_reason(self) -> str | None:
        """Why this backend has no decode kernels, or ``None`` when it has them."""
        return f"the {self.name} backend has no decode kernels"

    def attention_splits(self, batch: int, kv_heads: int, context: int) -> int:
        """Into how many pieces the attention kernel splits the context (1: not split)."""
        return 1

    def attention_launcher(self, q, k_cache, v_cache, out, dtype: str, context: int) -> Callable[[], None]:
        """Decode attention over the first ``context`` positions of the caches (``decode_ref.py``)."""
        raise NotImplementedError

    def add_rmsnorm_launcher(self, x, residual, weight, out, residual_out, dtype: str,
                             eps: float) -> Callable[[], None]:
        raise NotImplementedError

    def rotary_launcher(self, qkv, cos_sin, q, k_cache, v_cache, position: int, dtype: str, heads: int,
                        kv_heads: int, head_dim: int) -> Callable[[], None]:
        raise NotImplementedError

    def silu_mul_launcher(self, gate_up, out, dtype: str) -> Callable[[], None]:
        raise NotImplementedError

    def tick_launcher(self, counter) -> Callable[[], None]:
        """One thread adds 1 to ``counter[0]`` (a uint32 device array): the launch probe's kernel."""
        raise NotImplementedError

    def decode_gemm_dtypes(self) -> tuple[str, ...]:
        """The dtypes ``decode_gemm_launcher`` runs (fp8 where the backend offers it)."""
        offered = self.gemm_modes()
        return tuple(d for d in ("fp16", "bf16", "fp8", "fp32") if decode_gemm_mode(d) in offered)

    def decode_gemm_launcher(self, a, w, c, dtype: str) -> Callable[[], None]:
        """C (m×n) = A (m×k)·W (k×n), inputs and output in ``dtype``, fp32 accumulation, as a decode step runs
        it (cuBLAS on a GPU): the GEMM of ``gemm_launcher`` in mode ``decode_gemm_mode(dtype)``."""
        return self.gemm_launcher(a, w, c, decode_gemm_mode(dtype))

    def sequence_launcher(self, launches: list[Callable[[], None]]) -> Callable[[], None]:
        """The launches one after another, eagerly (one decode layer as a program runs it)."""
        steps = tuple(launches)

        def run():
            for step in steps:
                step()
        return run

    def graph_reason(self) -> str | None:
        """Why this backend cannot capture CUDA graphs, or ``None`` when it can."""
        return f"the {self.name} backend has no CUDA graphs"

    def graph_launcher(self, launches: list[Callable[[], None]]) -> Callable[[], None]:
        """The launches captured once, in order, into a CUDA graph; calling the result replays the graph."""
        raise NotImplementedError

    def host_roundtrip_s(self, launch: Callable[[], None], k: int) -> float:
        """Host seconds of ``k`` × (``launch``, then wait for the device): the fixed cost of a step's sync."""
        raise NotImplementedError

    # all-reduce over devices of this process (NCCL on a GPU) ------------------------------------------
    def allreduce_reason(self, devices: tuple[int, ...]) -> str | None:
        """Why this backend cannot all-reduce over ``devices`` in one process, or ``None`` when it can."""
        return f"the {self.name} backend has no all-reduce over the devices of one process"

    def allreduce_library(self) -> str:
        """What runs the all-reduce of ``allreduce_launcher`` (library and version)."""
        return self.name

    def allreduce_launcher(self, devices: tuple[int, ...], sends: list, recvs: list) -> Callable[[], None]:
        """Sum of ``sends`` (float32, one per device, on that device) into every ``recvs[i]``, out of place,
        over the devices of this process; time it with ``time_k`` (device ``devices[0]``'s clock)."""
        raise NotImplementedError

    def allreduce_graph_launcher(self, devices: tuple[int, ...], sends: list, recvs: list,
                                 count: int) -> Callable[[], None]:
        """``count`` all-reduces captured into CUDA graphs (one per device); calling the result replays them."""
        raise NotImplementedError

    # links (kernels/links.py) ------------------------------------------------------------------------
    def links_reason(self) -> str | None:
        """Why this backend cannot run the link probes, or ``None`` when it can."""
        return f"the {self.name} backend has no copy probes (use --backend cupy, or virtual:PROFILE on the CPU)"

    def device_count(self) -> int:
        return len(self.devices())

    def alloc(self, kind: str, nbytes: int, device: int) -> Buffer:
        """``nbytes`` of ``kind`` memory (device, pinned, pageable) on or for ``device``."""
        raise NotImplementedError

    def write(self, buf: Buffer, data: np.ndarray) -> None:
        """Fill the first ``data.size`` bytes of ``buf`` with ``data`` (uint8), and wait."""
        raise NotImplementedError

    def read(self, buf: Buffer, nbytes: int) -> np.ndarray:
        """The first ``nbytes`` bytes of ``buf``, as a host uint8 array."""
        raise NotImplementedError

    def can_access_peer(self, src: int, dst: int) -> bool:
        """The runtime's word: can ``src`` reach ``dst``'s memory directly."""
        return False

    def set_peer_access(self, a: int, b: int, enabled: bool) -> None:
        """Enable (or disable) peer access both ways between ``a`` and ``b``."""
        raise NotImplementedError

    def copy_op(self, path: str, engine: str, src: Buffer, dst: Buffer, nbytes: int) -> CopyOp:
        raise NotImplementedError

    def run_op(self, op: CopyOp) -> None:
        """One copy, and wait for it."""
        raise NotImplementedError

    def time_ops(self, ops: list[CopyOp], k: int) -> list[float]:
        raise NotImplementedError

    def max_gated_k(self, ops: list[CopyOp]) -> int:
        """The most copies of each op that ``time_ops`` can queue behind its blocked start at once (0: not
        even one)."""
        return 1 << 16

    def time_back_to_back(self, op: CopyOp, k: int) -> float:
        raise NotImplementedError

    def time_oneshot(self, op: CopyOp, k: int) -> float:
        raise NotImplementedError

    def time_enqueue(self, op: CopyOp, k: int) -> float:
        raise NotImplementedError

    def activate(self) -> None:
        """Make this backend's device the current one (arrays and kernels without an explicit device)."""

    def release_memory(self) -> None:
        """Give memory cached by the array library back to the device (between steps that use a lot)."""

    def on_device(self, device: int) -> Backend:
        """A backend of the same kind whose kernels run on ``device`` (this one when it already does)."""
        return self if device == self.device_index else type(self)(device=device)

    def local_to(self, device: int):
        """A context in which host memory is allocated and touched NUMA-local to ``device``."""
        return contextlib.nullcontext()

    def nvml(self):
        """The NVML module (initialised) for the topology, or ``None`` with ``nvml_reason`` set."""
        try:
            import pynvml

            pynvml.nvmlInit()
            return pynvml
        except Exception as exc:  # ImportError, or pynvml.NVMLError: no driver
            self.nvml_reason = f"NVML not available ({type(exc).__name__}: {exc})"
            return None

    nvml_reason = "NVML not available"
