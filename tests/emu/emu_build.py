"""Build a CUDA C++ source of gpucal against ``emu.h`` (g++, a shared library) and launch its kernels from Python:
a CPU emulator that runs the repository's real kernels (``cuda_src.SOURCE``, ``decode_src.DECODE_SOURCE``) where
no GPU is, under the project's own checks.

``emulated_source`` removes the source's inline-PTX helpers (each ``__device__`` function whose body holds
``asm``: they must be exactly those ``emu.h`` defines, ``REPLACED``), follows each ``__shared__`` declaration with
``emu_shared`` (poisoned per block), and appends one ``emu_run_<name>`` entry per kernel. ``Library.kernel(name)``
is called as CuPy calls a RawKernel, ``fn(grid, block, args)``, with the arguments packed as CuPy packs them (an
ndarray as its data pointer, a NumPy scalar as its bytes, a Python int as 8 bytes, a float as a double); emu.h
refuses an argument whose size differs from its parameter's. ``Memory`` hands out arrays between guard bands of
0xff bytes (NaN in fp16, bf16 and fp32, so a read past an input shows in the result) and says, after launches,
whether a band or a read-only input changed.

What a pass proves: the kernels' indexing, tiling, fragment layouts, reductions, split/combine protocol and the
barriers that order shared memory (in four deterministic schedules) compute what ``reference.py`` and
``decode_ref.py`` say, within their tolerances, at the shapes tried. What it does not check:

- timing, occupancy, coalescing, bank conflicts: nothing here is fast or slow as on a GPU;
- the memory model beyond barriers: blocks run one after another (no race between blocks, no atomics), a warp's
  lanes never interleave between its collectives, and shared memory is read at once where the hardware may hold
  stale values longer; a barrier whose absence only changes a softmax's running max (any max gives the same
  result) is invisible to any output check;
- the real PTX of the helpers it replaces (``cvt``, ``ld.global.cs``, ``%globaltimer``, ``mma.sync``): their
  semantics are restated in emu.h (tests/compile compiles the PTX with NVRTC; tests/gpu runs it);
- the tensor core's own fp32 accumulation order and rounding (here the products and C are summed in double
  and rounded once);
- register and shared-memory limits, spills, ``__launch_bounds__``, divergent ``__syncthreads`` (every barrier is
  the same barrier here), and reads of global memory outside the guard bands.
"""

from __future__ import annotations

import ctypes
import re
import subprocess
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
HEADER = HERE / "emu.h"
REPLACED = frozenset({"h2f", "f2h", "ld_stream", "ld_noalloc", "st_stream", "globaltimer", "mma_f16", "mma_bf16"})
CXX = "g++"
# -fno-gnu-unique: each library keeps its own template statics (shared arrays), even where two define the same
FLAGS = ("-std=c++17", "-O1", "-fPIC", "-shared", "-w", "-fno-strict-aliasing", "-fno-gnu-unique")
GUARD_BYTES = 256  # each side of an array; the array itself starts 256-aligned, as cudaMalloc's do

_SIGNATURE = re.compile(r"__device__\s+__forceinline__\s+[\w\s\*&:<>]*?\b(\w+)\s*\([^;{]*\)\s*$")
_ASM = re.compile(r"\basm\b")
_SHARED = re.compile(r"\b__shared__\s+([^;{}]+);")
_DECLARATOR = re.compile(r"(\w+)\s*(?:\[[^\]]*\]\s*)*$")


class BuildError(RuntimeError):
    pass


class LaunchError(RuntimeError):
    pass


def _code_mask(source: str) -> list[bool]:
    """For each character: True where it is code (not a comment, a string or character literal, or a
    preprocessor line)."""
    mask = [True] * len(source)
    i, n, line_start = 0, len(source), True
    while i < n:
        c = source[i]
        if line_start and c == "#":  # a directive, with its continuation lines
            j = i
            while j < n and not (source[j] == "\n" and source[j - 1] != "\\"):
                j += 1
            for k in range(i, j):
                mask[k] = False
            i = j
            continue
        if c in " \t":
            i += 1
            continue
        line_start = c == "\n"
        if source.startswith("//", i):
            j = source.find("\n", i)
            j = n if j < 0 else j
        elif source.startswith("/*", i):
            j = source.index("*/", i + 2) + 2
        elif c in "\"'":
            j = i + 1
            while source[j] != c:
                j += 2 if source[j] == "\\" else 1
            j += 1
        else:
            i += 1
            continue
        for k in range(i, j):
            mask[k] = False
        i = j
    return mask


def strip_ptx(source: str) -> tuple[str, frozenset[str]]:
    """``source`` without its top-level ``__device__`` functions whose body holds inline ``asm``, and their
    names. Raises BuildError if ``asm`` is left anywhere else in the code."""
    mask = _code_mask(source)
    code = "".join(c if m else " " for c, m in zip(source, mask))  # same offsets, comments blanked
    spans, names = [], []
    depth, item_start, body_start = 0, 0, None
    for i, c in enumerate(code):
        if c == "{":
            if depth == 0:
                body_start = i
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                body = code[body_start:i]
                head = code[item_start:body_start]
                if _ASM.search(body):
                    m = _SIGNATURE.search(head)
                    if m is None:
                        raise BuildError(f"inline asm outside a __device__ helper: {head.strip()[-200:]!r}")
                    spans.append((item_start + m.start(), i + 1))
                    names.append(m.group(1))
                item_start = i + 1
        elif c == ";" and depth == 0:
            item_start = i + 1
    out, last = [], 0
    for start, end in spans:
        out.append(source[last:start])
        last = end
    out.append(source[last:])
    stripped = "".join(out)
    mask = _code_mask(stripped)
    left = [m.start() for m in _ASM.finditer(stripped) if mask[m.start()]]
    if left:
        raise BuildError(f"inline asm left in the code at {stripped[max(0, left[0] - 120):left[0] + 40]!r}")
    return stripped, frozenset(names)


def poison_shared(source: str) -> str:
    """Each ``__shared__ T a[..], b;`` followed by ``emu_shared(a); emu_shared(b);``: the first thread of a block to
    declare an array fills it with 0xff bytes (NaN as floats), so a read of shared memory that no barrier orders
    after its write shows in the result."""
    mask = _code_mask(source)
    out, last = [], 0
    for m in _SHARED.finditer(source):
        if not mask[m.start()]:
            continue
        names = []
        for part in _top_level_commas(m.group(1)):
            d = _DECLARATOR.search(part)
            if d is None:
                raise BuildError(f"cannot read the shared declaration {m.group(0)!r}")
            names.append(d.group(1))
        out.append(source[last:m.end()])
        out.append(" " + " ".join(f"emu_shared({n});" for n in names))
        last = m.end()
    out.append(source[last:])
    return "".join(out)


def _top_level_commas(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, c in enumerate(text):
        depth += c in "[(<"
        depth -= c in "])>"
        if c == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


def emulated_source(source: str, kernel_names) -> str:
    """The C++ translation unit: ``emu.h``, ``source`` without its PTX helpers and with its shared arrays
    poisoned per block (``poison_shared``), one entry per kernel."""
    stripped, removed = strip_ptx(source)
    unknown = removed - REPLACED
    if unknown:
        raise BuildError(f"inline-PTX helpers that emu.h does not emulate: {sorted(unknown)}")
    stripped = poison_shared(stripped)
    entries = "".join(f"EMU_KERNEL({name})\n" for name in kernel_names)
    return f'#include "{HEADER}"\n#line 1 "kernel.cu"\n{stripped}\n#line 1 "emu_entries"\n{entries}'


def build_many(units: dict, out_dir: Path) -> dict:
    """{tag: (source, kernel names)} built into ``out_dir/<tag>.so``, the compilers running at once; {tag: Library}."""
    running = {}
    for tag, (source, names) in units.items():
        cpp = out_dir / f"{tag}.cpp"
        cpp.write_text(emulated_source(source, names))
        running[tag] = subprocess.Popen([CXX, *FLAGS, str(cpp), "-o", str(out_dir / f"{tag}.so")],
                                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    failed = []
    for tag, proc in running.items():
        _, err = proc.communicate(timeout=600)
        if proc.returncode:
            failed.append(f"{CXX} failed on {out_dir / tag}.cpp:\n{err[-6000:]}")
    if failed:
        raise BuildError("\n".join(failed))
    return {tag: Library(out_dir / f"{tag}.so") for tag in units}


def build(source: str, kernel_names, out_dir: Path, tag: str) -> Library:
    return build_many({tag: (source, kernel_names)}, out_dir)[tag]


_FEATURES = r"""
#include <ucontext.h>
#include <string.h>
#include <tuple>
static ucontext_t main_ctx, fiber_ctx;
static char stack[1 << 16];
static float result;
static void body() { _Float16 h = (_Float16)1.5f; result = std::apply([](float a, float b) { return a + b; },
                                                                     std::make_tuple((float)h, 0.5f)); }
int main() {
    getcontext(&fiber_ctx);
    fiber_ctx.uc_stack.ss_sp = stack;
    fiber_ctx.uc_stack.ss_size = sizeof stack;
    fiber_ctx.uc_link = &main_ctx;
    makecontext(&fiber_ctx, body, 0);
    swapcontext(&main_ctx, &fiber_ctx);
    return result == 2.0f ? 0 : 1;
}
"""


def toolchain_reason(out_dir: Path) -> str | None:
    """None if ``CXX`` compiles and runs what ``emu.h`` needs (C++17, _Float16, ucontext fibers); else why not.
    (It does not include emu.h: an error there fails the tests instead of skipping them.)"""
    src, exe = out_dir / "features.cpp", out_dir / "features"
    src.write_text(_FEATURES)
    try:
        done = subprocess.run([CXX, "-std=c++17", str(src), "-o", str(exe)], capture_output=True, text=True,
                              timeout=120)
    except FileNotFoundError:
        return f"no C++ compiler ({CXX}) on this machine"
    if done.returncode:
        return f"{CXX} lacks what the CPU emulator needs (C++17, _Float16, ucontext): {done.stderr[-1500:]}"
    run = subprocess.run([str(exe)], capture_output=True, timeout=60)
    if run.returncode:
        return f"a ucontext fiber did not run under {CXX}'s build (exit {run.returncode})"
    return None


def _pack(value):
    """(ctypes object holding the argument's bytes, size) as CuPy would pass ``value``."""
    if isinstance(value, np.ndarray):
        return ctypes.c_void_p(value.ctypes.data), 8
    if isinstance(value, np.generic):
        raw = value.tobytes()
        return ctypes.create_string_buffer(raw, len(raw)), len(raw)
    if isinstance(value, bool):
        return ctypes.c_bool(value), 1
    if isinstance(value, int):
        return ctypes.c_int64(value), 8
    if isinstance(value, float):
        return ctypes.c_double(value), 8
    raise TypeError(f"cannot pass a {type(value).__name__} to a kernel")


def _dims(values) -> tuple[int, int, int]:
    values = tuple(int(v) for v in (values if isinstance(values, (tuple, list)) else (values,)))
    if not 1 <= len(values) <= 3:
        raise LaunchError(f"grid and block take 1 to 3 dimensions, got {values}")
    return values + (1,) * (3 - len(values))


class Library:
    """A built source: ``launch(name, grid, block, args)``, ``kernel(name)`` (a RawKernel-like callable)."""

    def __init__(self, path: Path):
        self.path = path
        self._dll = ctypes.CDLL(str(path))
        self._dll.emu_error.restype = ctypes.c_char_p
        self.launches = 0

    def set_order(self, order: int) -> None:
        """0: threads and blocks scheduled in ascending order; 1: descending."""
        self._dll.emu_set_order(ctypes.c_int(order))

    def launch(self, name: str, grid, block, args) -> None:
        entry = getattr(self._dll, f"emu_run_{name}")
        packed = [_pack(a) for a in args]
        dims = (ctypes.c_uint * 6)(*_dims(grid), *_dims(block))
        params = (ctypes.c_void_p * max(1, len(packed)))(*[ctypes.cast(ctypes.pointer(p), ctypes.c_void_p)
                                                          for p, _ in packed])
        sizes = (ctypes.c_int * max(1, len(packed)))(*[s for _, s in packed])
        self.launches += 1
        if entry(dims, params, sizes, ctypes.c_int(len(packed))):
            raise LaunchError(f"{name} grid {tuple(dims[:3])} block {tuple(dims[3:])}: "
                              f"{self._dll.emu_error().decode()}")

    def kernel(self, name: str):
        getattr(self._dll, f"emu_run_{name}")  # a kernel the library does not hold fails here
        return lambda grid, block, args: self.launch(name, grid, block, args)


class Memory:
    """Arrays for the emulated device: each inside guard bands of 0xff bytes (NaN in fp16, bf16 and fp32, so a
    read past an input shows in the result); ``intact()`` names a changed band or read-only array."""

    def __init__(self):
        self._blocks = []  # (buffer, start, nbytes, array, frozen bytes or None)

    def array(self, shape, dtype, fill=None, read_only: bool = False, values=None) -> np.ndarray:
        dtype = np.dtype(dtype)
        shape = tuple(shape) if isinstance(shape, (tuple, list)) else (int(shape),)
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        buf = np.full(nbytes + 3 * GUARD_BYTES, 0xFF, dtype=np.uint8)
        start = GUARD_BYTES + (-(buf.ctypes.data + GUARD_BYTES)) % GUARD_BYTES
        arr = buf[start:start + nbytes].view(dtype).reshape(shape)
        if values is not None:
            arr[...] = values
        elif fill is not None:
            arr[...] = fill
        if read_only:
            arr.flags.writeable = False
        self._blocks.append((buf, start, nbytes, arr, arr.tobytes() if read_only else None))
        return arr

    def like(self, values, read_only: bool = True) -> np.ndarray:
        values = np.asarray(values)
        return self.array(values.shape, values.dtype, values=values, read_only=read_only)

    def empty(self, shape, dtype=np.float32) -> np.ndarray:
        """Uninitialised device memory, as ``cupy.empty``: here NaN bytes."""
        return self.array(shape, dtype, fill=None)

    def intact(self) -> str | None:
        for buf, start, nbytes, arr, frozen in self._blocks:
            if not (buf[:start] == 0xFF).all() or not (buf[start + nbytes:] == 0xFF).all():
                return f"a kernel wrote outside a {arr.dtype} array of shape {arr.shape}"
            if frozen is not None and arr.tobytes() != frozen:
                return f"a kernel wrote into a read-only {arr.dtype} input of shape {arr.shape}"
        return None
