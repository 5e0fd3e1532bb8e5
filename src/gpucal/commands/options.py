"""The flags and argument types the commands share: quantities with units, bounded whole numbers, sweep
ranges, lists of sizes and device pairs, the backend flags, the checks of a config against the machine, and
what the commands that run over MPI share (the world, with a clear refusal outside mpiexec, and
``--simulate-net LINK[+OPTION...]``).

Each argparse type raises ``argparse.ArgumentTypeError`` so that argparse reports ``argument --flag: why`` on
one line; the checks after parsing raise ``InputError`` naming the flag. Every number is finite and inside its
range (``gpucal.limits``), whole numbers are ASCII digits only, and an empty string is refused rather than read
as "not given".
"""

from __future__ import annotations

import argparse
import re

from gpucal import limits
from gpucal.errors import InputError
from gpucal.kernels.comm import MpiUnavailable, SimulatedNet, world
from gpucal.probes.links import sweep_sizes
from gpucal.probes.memory import unfit
from gpucal.profiles.queries import resolve_link
from gpucal.units import UnitError, parse_positive, parse_quantity, parse_whole_bytes

__all__ = ["positive_int", "nonnegative_int", "int_in", "quantity", "budget", "nonempty", "whole", "sweep_spec",
           "sweep_size", "list_items", "bytes_list", "link_sizes", "device_pairs", "backend_arg", "check_memory",
           "check_pairs", "simulated_net", "mpi_world", "mark_rank", "checked"]

_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*", re.ASCII)


def whole(text: str) -> int:
    """A whole number in ASCII digits (``int()`` alone reads ``٣`` as 3 and ``1_000`` as 1000)."""
    if not isinstance(text, str) or not _WHOLE.fullmatch(text):
        raise ValueError(f"expected a whole number, got {text!r}")
    return int(text)


def _int(text: str, minimum: int, maximum: int | None = None) -> int:
    try:
        value = whole(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < minimum:
        raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {text!r}")
    if maximum is not None and value > maximum:
        raise argparse.ArgumentTypeError(f"must be at most {maximum}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _int(text, 1)


def nonnegative_int(text: str) -> int:
    return _int(text, 0)


def int_in(minimum: int, maximum: int):
    """An argparse type for a whole number in [minimum, maximum] (the limit named in the message)."""

    def parse(text: str) -> int:
        return _int(text, minimum, maximum)

    parse.__name__ = "whole number"
    return parse


def nonempty(text: str) -> str:
    """Text that must not be empty: ``--pairs ''`` is a mistake, not "every pair"."""
    if not text.strip():
        raise argparse.ArgumentTypeError("empty; give a value or leave the flag out")
    return text


def quantity(kind: str, positive: bool = True, range_kind: str | None = None):
    """An argparse type for a quantity of ``kind`` (time, bytes, rate, flops, number), finite and inside
    ``limits.RANGES[range_kind]`` (default: the range of ``kind`` where it has one). ``positive=False``
    also takes zero (never a negative)."""
    range_kind = range_kind or (kind if kind in limits.RANGES else None)

    def parse(text: str) -> float:
        try:
            value = parse_positive(text, kind) if positive else parse_quantity(text, kind)
        except UnitError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text!r}")
        if range_kind is not None and not (value == 0 and not positive):
            why = limits.check_range(value, range_kind)
            if why:
                raise argparse.ArgumentTypeError(f"{text}: {why}")
        return value

    parse.__name__ = kind
    return parse


def budget(text: str) -> float:
    """``--budget``: seconds of sampling per case, a positive time of at most ``limits.RANGES["time"]``
    (``2``, ``500ms``); nan, inf and 1e308 are refused."""
    return _TIME(text)


_TIME = quantity("time")


def sweep_size(key: str) -> int:
    """The largest value a ``--sweep`` range of ``key`` takes."""
    return {"batch": limits.MAX_BATCH, "cards": limits.MAX_CARDS}[key]


def _range(text: str, maximum: int) -> list[int]:
    """``A:B`` doubles from A up to B (B included); ``A:B:S`` steps by S; ``a,b,c`` lists values."""
    if ":" not in text:
        parts = text.split(",")
        if len(parts) > limits.MAX_SWEEP_VALUES:
            raise argparse.ArgumentTypeError(f"more than {limits.MAX_SWEEP_VALUES} values in one range")
        return [_int(part.strip(), 1, maximum) for part in parts]
    parts = text.split(":")
    if len(parts) not in (2, 3):
        raise argparse.ArgumentTypeError(f"expected START:STOP or START:STOP:STEP, got {text!r}")
    start, stop = _int(parts[0], 1, maximum), _int(parts[1], 1, maximum)
    if stop < start:
        raise argparse.ArgumentTypeError(f"STOP must not be below START, got {text!r}")
    if len(parts) == 3:
        step = _int(parts[2], 1)
        if (stop - start) // step + 1 > limits.MAX_SWEEP_VALUES:
            raise argparse.ArgumentTypeError(f"more than {limits.MAX_SWEEP_VALUES} values in {text!r} "
                                             f"(at most {limits.MAX_SWEEP_VALUES} per range)")
        return list(range(start, stop + 1, step))
    values, value = [], start
    while value < stop:
        values.append(value)
        value *= 2
    return values + [stop]


def sweep_spec(text: str) -> tuple[str, list]:
    """``batch=RANGE``, ``cards=RANGE`` or ``strategy=pp,tp,hybrid``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or key not in ("batch", "cards", "strategy"):
        raise argparse.ArgumentTypeError(
            f"expected batch=RANGE, cards=RANGE or strategy=LIST (RANGE: 1:1024 doubles, 1:64:1 steps), got {text!r}")
    if key == "strategy":
        values = [v.strip() for v in value.split(",")]
        bad = [v for v in values if v not in ("pp", "tp", "hybrid")]
        if bad:
            raise argparse.ArgumentTypeError(f"strategy: expected pp, tp or hybrid, got {bad[0]!r}")
        return key, values
    return key, _range(value, sweep_size(key))


def list_items(text: str) -> list[str]:
    """The comma-separated items of a list flag; an empty item or more than ``limits.MAX_LIST_VALUES`` is refused."""
    items = [v.strip() for v in text.split(",")]
    if any(not v for v in items):
        raise argparse.ArgumentTypeError(f"an empty item in {text!r}")
    if len(items) > limits.MAX_LIST_VALUES:
        raise argparse.ArgumentTypeError(f"more than {limits.MAX_LIST_VALUES} values in one list")
    return items


def bytes_list(text: str, flag: str) -> tuple[int, ...]:
    """A list of sizes in whole bytes (``4B,1MiB``); a bad one is an ``InputError`` naming ``flag``."""
    try:
        return tuple(parse_whole_bytes(v) for v in list_items(text))
    except (UnitError, argparse.ArgumentTypeError) as exc:
        raise InputError(f"{flag}: {exc}") from None


def link_sizes(text: str, flag: str = "--sizes") -> tuple[int, ...]:
    """``4B..256MiB`` (powers of 2 between) or a list ``4B,1MiB``: copy sizes in whole bytes (``--sizes``)."""
    if ".." not in text:
        return bytes_list(text, flag)
    lo_text, _, hi_text = text.partition("..")
    if ".." in hi_text or hi_text.startswith(".") or lo_text.endswith("."):
        raise InputError(f"{flag}: {text}: expected one range A..B of two sizes, such as 4B..256MiB")
    if not lo_text.strip() or not hi_text.strip():
        raise InputError(f"{flag}: {text}: a range needs both ends, such as 4B..256MiB")
    lo, hi = bytes_list(lo_text, flag)[0], bytes_list(hi_text, flag)[0]
    if "," in lo_text or "," in hi_text:
        raise InputError(f"{flag}: {text}: give a list or a range A..B, not both")
    if lo > hi:
        raise InputError(f"{flag}: {text}: the range runs from the smaller size to the larger")
    sizes = sweep_sizes(lo, hi)
    if not sizes:
        raise InputError(f"{flag}: {text}: no power of 2 lies in that range")
    return sizes


def device_pairs(text: str | None) -> tuple[tuple[int, int], ...] | None:
    """``--pairs 0-1,2-3`` as unordered pairs; ``None`` (not given) for None. An empty text is refused, never
    read as "every pair"."""
    if text is None:
        return None
    items = text.split(",")
    if len(items) > limits.MAX_LIST_VALUES:
        raise InputError(f"--pairs: more than {limits.MAX_LIST_VALUES} pairs")
    pairs = []
    for item in items:
        try:
            a, b = (whole(x) for x in item.split("-"))
        except ValueError:
            raise InputError(f"--pairs: expected pairs like 0-1,2-3, got {item!r}") from None
        pairs.append((min(a, b), max(a, b)))
    return tuple(dict.fromkeys(pairs))


def backend_arg(p) -> None:
    """``--backend NAME`` and ``--device N``, as every command that runs on one backend takes them."""
    p.add_argument("--backend", default="auto", metavar="NAME",
                   help="device layer: cupy (preferred), numba, simulator (the Numba simulator on the CPU: checks "
                        "kernels, no GPU figures), or virtual:PROFILE[:N][+OPTION...] (a simulated machine of N "
                        "cards of a profile, e.g. virtual:rtx4090:8; docs/links.md). Default: auto (cupy, then numba)")
    p.add_argument("--device", type=int_in(0, limits.MAX_DEVICES - 1), default=0, metavar="N",
                   help="CUDA device index (default 0)")


# the config fields a case's size comes from -> the flag that sets them
_FLAGS = {"stream_sizes": "--sizes", "sizes": "--sizes", "latency_sizes": "--sizes", "gemv_shape": "--gemv-shape",
          "batches": "--batches", "decode_batches": "--batches", "shapes": "--shapes", "contexts": "--context"}


def check_memory(backend, needs, args) -> None:
    """Refuse (naming the flag and the limit) a config whose largest case cannot fit this machine's device
    or host memory, before anything is allocated."""
    found = unfit(backend, needs)
    if found is None:
        return
    need, why = found
    flags = list(dict.fromkeys(_FLAGS[f] for f in need.fields))
    given = [f for f in flags if getattr(args, f[2:].replace("-", "_"), None) is not None]
    raise InputError(f"{', '.join(given or flags)}: {why}{'' if given else ' (the default)'}; give smaller sizes")


def check_pairs(backend, pairs) -> None:
    """``--pairs`` against the machine: each pair two of its devices (on one device, no pair exists)."""
    if pairs is None:
        return
    n = backend.device_count()
    for a, b in pairs:
        if a == b or not (0 <= a < n and 0 <= b < n):
            raise InputError(f"--pairs: {a}-{b} is not a pair of two of this machine's {n} device(s)")



def simulated_net(text: str | None, flag: str = "--simulate-net"):
    """``LINK[+noise=F][+seed=N][+per-host=N]`` as a ``SimulatedNet`` (LINK: a link preset, a file, or
    alpha=..,beta=..; per-host: ranks per simulated host, default 1); None for None."""
    if text is None:
        return None

    link, *options = text.split("+")
    if not link:
        raise InputError(f"{flag}: expected LINK[+noise=F][+seed=N][+per-host=N], such as eth1g or "
                         "eth1g+noise=0.02")
    choice = resolve_link(link, flag)
    values = {"noise": 0.0, "seed": 0, "per-host": 1}
    for option in options:
        key, sep, value = option.partition("=")
        if key not in values or not sep:
            raise InputError(f"{flag}: unknown option {option!r} (options: +noise=F, +seed=N, +per-host=N)")
        try:  # ASCII digits only: float() and int() also take '٠.٥', '١' and '1_0'
            values[key] = parse_quantity(value, "number") if key == "noise" else whole(value)
        except ValueError:
            raise InputError(f"{flag}: {key}: expected a number, got {value[:40]!r}") from None
        if key == "seed" and values[key] < 0:
            raise InputError(f"{flag}: seed: expected a whole number of at least 0, got {value!r}")
        if key == "noise" and not 0 <= values[key] < 1:
            raise InputError(f"{flag}: noise: expected a fraction in [0, 1), got {value!r}")
        if key == "per-host" and values[key] < 1:
            raise InputError(f"{flag}: per-host: expected at least 1 rank per simulated host, got {value!r}")
    return SimulatedNet(choice.spec.name, choice.spec.alpha_s, choice.spec.beta_Bps, values["noise"], values["seed"],
                        values["per-host"])


def mpi_world(what: str, simulate_hosts: bool = False, minimum: int = 2, ranks_per_host: int = 1):
    """The MPI world; refuses (exit 2) fewer than ``minimum`` ranks, naming how to launch ``what``."""
    w = world(simulate_hosts=simulate_hosts, ranks_per_host=ranks_per_host)
    if w.size < minimum:
        raise InputError(f"{what}: runs over MPI with at least {minimum} ranks; launch it with "
                         f"mpiexec -n N gpucal {what} (or srun -n N under Slurm); this is 1 rank")
    return w


def mark_rank() -> None:
    """Learn this process's rank, where MPI is there, so that an error every rank raises alike (a bad flag)
    is printed by rank 0 alone."""
    try:
        world()
    except MpiUnavailable:
        pass


def checked(parse, args):
    """``parse(args)`` (a command's flag checks, the same on every rank), with a refusal printed by rank 0 only."""
    try:
        return parse(args)
    except InputError:
        mark_rank()
        raise
