"""Bad input, table-driven: every command × every kind of flag value × every kind of file.

Each case runs ``python -m gpucal ARGV`` in a folder of its own, as a user would, under a memory limit
(``RLIMIT_AS``) and a time limit, and must:
- exit with the expected code (2: bad input; 1: the machine failed, e.g. a full disk);
- say so on exactly one line of stderr (``gpucal ...: error: ...`` or argparse's ``gpucal ...: error:``),
  naming the flag, file or field, with no traceback and nothing on stdout;
- leave the folder as it was: every file it held byte for byte, and no new file (no output, no
  ``.NAME.XXXX.tmp``).
A few good inputs run through the same harness (``CONTROLS``), so that the harness itself is seen to pass
what works and to see what a command writes.

The cases run in parallel in a pool of processes (one ``gpucal`` each); each test waits for its own.
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import pytest

from gpucal.cli import build_parser

TIME_LIMIT_S = 60.0  # generous: CI shares its CPUs; a hang or a runaway still ends well inside it
MEMORY_LIMIT_BYTES = 6 << 30  # address space: what a refused input may cost (imports + headroom), not a machine
LINE_MAX_CHARS = 1000  # "one clear line": a message is read, not scrolled


@dataclass(frozen=True)
class Case:
    id: str
    argv: tuple[str, ...]
    names: tuple[str, ...]  # what the line must name (the flag, the file, the field): each, case-insensitive
    code: int = 2
    files: tuple[str, ...] = ()  # fixture files to make in the case's folder (FILES below)
    writes: tuple[str, ...] = ()  # for a good input: what it may leave in the folder
    env: tuple[tuple[str, str], ...] = ()


def _builtin(folder: str, name: str) -> dict:
    return json.loads(resources.files("gpucal.profiles").joinpath(folder, f"{name}.json").read_text("utf-8"))


def _profile(**change) -> dict:
    doc = _builtin("datasheet", "rtx4090")
    doc["name"] = "user-card"
    for key, value in change.items():
        node, *path = key.split("__")
        target = doc[node]
        for part in path[:-1]:
            target = target[int(part)] if part.isdigit() else target[part]
        last = path[-1] if path else None
        if last is None:
            doc[node] = value
        elif last.isdigit():
            target[int(last)] = value
        else:
            target[last] = value
    return doc


def _dumps(doc) -> bytes:
    return json.dumps(doc, indent=1).encode()


_NULL_MEASURED = {"value": None, "source": "measured", "method": "GEMV, verified", "statistic": "median", "n": 1,
                  "reason": "every case failed verification"}
LONG_NAME = "a" * 100_000 + ".json"


def _null_link_beta() -> dict:
    """A measured profile whose first link's beta is unknown (null, with its reason)."""
    doc = json.loads((Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json").read_text())
    doc["links"][0]["beta_Bps"] = {**_NULL_MEASURED, "method": "fit", "statistic": "fit"}
    return doc


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _big(path: Path) -> None:  # a valid profile and 65 MiB of spaces (valid JSON): over the input limit
    with open(path, "wb") as f:
        f.write(_dumps(_profile()))
        f.write(b" " * (65 << 20))


def _device_node(path: Path) -> None:
    """A character device like /dev/null where this process may make one (root), else a FIFO: a path that
    is not a regular file, so that no test ever aims at the real /dev/null."""
    try:
        os.mknod(path, 0o666 | 0o020000, os.makedev(1, 3))
    except (PermissionError, OSError):
        os.mkfifo(path)


def _text(text: str):
    return lambda path: _write(path, text.encode())


# Files a case can ask for, made fresh in its folder: name -> maker(path).
FILES = {
    "good.json": lambda p: _write(p, _dumps(_profile())),
    "link.json": lambda p: _write(p, _dumps(_builtin("links", "pcie4-x16"))),
    "folder.json": lambda p: p.mkdir(),
    "fifo.json": _fifo,
    "node": _device_node,
    "empty.json": _text(""),
    "notjson.json": _text("{this is not json"),
    "latin1.json": lambda p: _write(p, b'{"schema": "gpucal.profile/1", "name": "caf\xe9"}'),
    "array.json": _text("[1, 2, 3]"),
    "deep.json": _text("[" * 200_000),
    "inf.json": lambda p: _write(p, _dumps(_profile(devices__0__memory_bandwidth_Bps__value=123456.0))
                                 .replace(b"123456.0", b"1e999")),
    "range.json": lambda p: _write(p, _dumps(_profile(
        devices__0__memory_bytes__value=1e300, devices__0__memory_bandwidth_Bps__value=1e-300))),
    "nullbw.json": lambda p: _write(p, _dumps(_profile(devices__0__memory_bandwidth_Bps=_NULL_MEASURED))),
    "ctrl.json": lambda p: _write(p, _dumps(_profile(name="card\x1b]0;owned\x07\x1b[2J"))),
    "count.json": lambda p: _write(p, _dumps(_profile(devices__0__count=1_000_000))),
    "big.json": _big,
    "ref.json": lambda p: _write(p, _dumps(_profile(plan_defaults={"link": "secret.json"}, links=[]))),
    "secret.json": _text('{"schema": "SECRET-TOKEN-7731"}'),
    "hf-type.json": _text(json.dumps({"model_type": ["llama"], "hidden_size": 4096, "num_hidden_layers": 32,
                                      "num_attention_heads": 32, "intermediate_size": 11008,
                                      "vocab_size": 32000})),
    "hf-huge.json": _text(json.dumps({"model_type": "llama", "hidden_size": 10**200, "num_hidden_layers": 32,
                                      "num_attention_heads": 32, "intermediate_size": 11008,
                                      "vocab_size": 32000})),
    "hf-str.json": _text(json.dumps({"model_type": "llama", "hidden_size": "4096", "num_hidden_layers": 32,
                                     "num_attention_heads": 32, "intermediate_size": 11008, "vocab_size": 32000})),
    "old.json": lambda p: _write(p, b"the user's own file\n"),
    "old.html": lambda p: _write(p, b"<p>the user's own page</p>\n"),
    "nccl.txt": _text("# nThread 1 nGpus 2 minBytes 8 maxBytes 8 step: 2(factor) warmup iters: 5 iters: 20 agg iters: 1"
                      " validation: 1 graph: 0\n#  Rank  0 Group  0 Pid  1 on box device  0 [0x01] NVIDIA GeForce RTX "
                      "4090\n#  Rank  1 Group  0 Pid  1 on box device  1 [0x02] NVIDIA GeForce RTX 4090\n#  size count "
                      "type redop root time algbw busbw #wrong\n  8  2  float  sum  -1  20.0  0.00  0.00  0  20.0  0.00  "
                      "0.00  0\n  1048576  262144  float  sum  -1  60.0  17.48  17.48  0  60.0  17.48  17.48  0\n"),
    "plots": lambda p: (p.mkdir(), (p / "roofline.png").write_bytes(b"\x89PNG the user's old figure")),
    "zero-link.json": lambda p: os.symlink("/dev/zero", p),
    "gen9.json": lambda p: _write(p, _dumps(_profile(devices__0__host_link__pcie_generation__value=9))),
    "nullbeta.json": lambda p: _write(p, _dumps(_null_link_beta())),
    # lone surrogates, as JSON escapes: no terminal can be sent them
    "surrogate.json": lambda p: _write(p, _dumps(_profile(title="T-SURROGATE")).replace(b"T-SURROGATE", b"T\\udfff")),
    "surrogate-device.json": lambda p: _write(p, _dumps(_profile(devices__0__name="N-SURROGATE"))
                                              .replace(b"N-SURROGATE", b"N\\ud800")),
}

# Files that are bad wherever a document is read: (file, what the line must name besides the flag).
BAD_DOCUMENTS = {
    "missing.json": "missing.json",
    "folder.json": "folder.json",
    "fifo.json": "fifo.json",
    "/dev/zero": "/dev/zero",
    "/dev/urandom": "/dev/urandom",
    "zero-link.json": "zero-link.json",
    LONG_NAME: "aaaa",
    "empty.json": "empty.json",
    "notjson.json": "notjson.json",
    "latin1.json": "latin1.json",
    "array.json": "array.json",
    "deep.json": "deep.json",
    "inf.json": "inf.json",
    "range.json": "memory",
    "ctrl.json": "name",
    "count.json": "count",
    "big.json": "larger than",
    "surrogate.json": "title",
    "surrogate-device.json": "devices[0].name",
}
_MADE = set(FILES)


CONTROLS: list[Case] = []  # good inputs through the same harness: it must pass what works


def _control(case: Case) -> None:
    if all(c.id != case.id for c in CONTROLS):
        CONTROLS.append(case)


def _doc_cases(prefix: str, argv, flag: str | None, good: str, writes=()) -> list[Case]:
    """One case per bad document where ``{}`` stands in ``argv``, and the control: ``good`` there works."""
    cases = []
    for name, named in BAD_DOCUMENTS.items():
        label = "long-name" if name == LONG_NAME else name.replace("/", "_")
        files = (name,) if name in _MADE else ()
        args = tuple(a.replace("{}", name) for a in argv)
        cases.append(Case(f"{prefix}:{label}", args, tuple(x for x in (flag, named) if x), files=files))
    _control(Case(f"control: {prefix}:{good}", tuple(a.replace("{}", good) for a in argv), (), code=0,
                  files=(good,) if good in _MADE else (), writes=writes))
    return cases


def _flag_cases(prefix: str, base, flag: str, values, good: str | None, names=None, writes=()) -> list[Case]:
    """One case per bad value of ``flag`` after ``base``, and the control: ``base flag good`` works (``good``
    None where the flag has no good value there, e.g. --pairs on one card)."""
    out = []
    for v in values:
        label = repr(v)[1:-1][:40] or "empty"
        out.append(Case(f"{prefix}:{flag}={label}", (*base, flag, v), names or (flag,)))
    if good is not None:
        _control(Case(f"control: {prefix}:{flag}={good}", (*base, flag, good), (), code=0, writes=writes))
    return out


PLAN = ("plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--strategy", "pp", "--batch", "1", "--cards", "1")
HYBRID = ("plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--strategy", "hybrid", "--batch", "1",
          "--cards", "2")
SWEEP = ("plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--sweep", "strategy=pp")  # + batch and cards
PROBE = ("probe", "membw", "--backend", "virtual:rtx4090")
P2P = ("p2p", "--backend", "virtual:rtx4090:2")
CALIBRATE = ("calibrate", "--simulate", "rtx4090:2", "--quick", "--no-kernel-check", "-o", "out.json")
PLOT = ("plot", "rtx4090", "-o", "figs")
EXPORT = ("profiles", "export", "rtx4090", "--format", "llm-analysis", "-o", "exp")

INT_BAD = ("", " ", "abc", "-1", "1.5", "\u0663", "1e999", "nan", "99999999999999999999999")
POSITIVE_INT_BAD = (*INT_BAD, "0")
QUANTITY_BAD = ("", "abc", "-1", "0", "nan", "inf", "-inf", "1e999", "1e308", "\u0663", "1e-300")
FLOAT_BAD = ("", "abc", "-1", "0", "nan", "inf", "1e308", "1e999")

CASES: list[Case] = []

# --- documents, wherever one is read ---
CASES += _doc_cases("plan --gpu", ("plan", "--gpu", "{}", *PLAN[3:]), "--gpu", "good.json")
CASES += _doc_cases("plan --model", (*PLAN[:3], "--model", "{}", *PLAN[5:]), "--model", "llama-3.1-8b")
CASES += _doc_cases("plan --link", (*PLAN, "--cards", "2", "--link", "{}"), "--link", "link.json")
CASES += _doc_cases("plan --net", (*PLAN, "--cards", "2", "--cards-per-host", "1", "--net", "{}"), "--net",
                    "link.json")
CASES += _doc_cases("profiles show", ("profiles", "show", "{}"), None, "good.json")
CASES += _doc_cases("profiles validate", ("profiles", "validate", "{}"), None, "good.json")
CASES += _doc_cases("profiles export", ("profiles", "export", "{}", "--format", "llm-analysis", "-o", "exp"), None,
                    "good.json", writes=("exp",))
CASES += _doc_cases("compare", ("compare", "{}", "rtx4090"), None, "good.json")
CASES += _doc_cases("plot", ("plot", "{}", "-o", "figs"), None, "good.json", writes=("figs",))
CASES += _doc_cases("probe --backend virtual:FILE", ("probe", "membw", "--backend", "virtual:{}", "--kernels", "copy"),
                    "--backend", "good.json")
CASES += _doc_cases("p2p --backend virtual:FILE", ("p2p", "--backend", "virtual:{}:2", "--sizes", "4B..64B"),
                    "--backend", "good.json")
CASES += _doc_cases("calibrate --simulate FILE",
                    ("calibrate", "--simulate", "{}", "--quick", "--no-kernel-check", "-o", "out.json"), "--simulate",
                    "good.json", writes=("out.json",))

# --- documents that are valid but cannot serve where they are used ---
CASES += [
    Case("probe --backend virtual:nullbw", ("probe", "membw", "--backend", "virtual:nullbw.json"),
         ("--backend", "nullbw.json", "memory_bandwidth"), files=("nullbw.json",)),
    Case("calibrate --simulate nullbw", ("calibrate", "--simulate", "nullbw.json", "--quick", "-o", "out.json"),
         ("--simulate", "nullbw.json", "memory_bandwidth"), files=("nullbw.json",)),
    Case("plan --gpu nullbw", ("plan", "--gpu", "nullbw.json", *PLAN[3:]), ("--gpu", "nullbw.json", "--mem-bw"),
         files=("nullbw.json",)),
    Case("plan --gpu a link", ("plan", "--gpu", "link.json", *PLAN[3:]), ("--gpu", "link.json"), files=("link.json",)),
    Case("plan --model a profile", (*PLAN[:3], "--model", "good.json", *PLAN[5:]), ("--model", "good.json"),
         files=("good.json",)),
    Case("plan --link a profile", (*PLAN, "--cards", "2", "--link", "good.json"), ("--link", "good.json"),
         files=("good.json",)),
    Case("plan --model hf list type", (*PLAN[:3], "--model", "hf-type.json", *PLAN[5:]),
         ("--model", "hf-type.json", "model_type"), files=("hf-type.json",)),
    Case("plan --model hf huge", (*PLAN[:3], "--model", "hf-huge.json", *PLAN[5:]),
         ("--model", "hf-huge.json", "hidden_size"), files=("hf-huge.json",)),
    Case("plan --model hf string", (*PLAN[:3], "--model", "hf-str.json", *PLAN[5:]),
         ("--model", "hf-str.json", "hidden_size"), files=("hf-str.json",)),
    # a profile's reference may name a built-in or a file beside it, never one elsewhere, and never echo it
    Case("plan --gpu ref outside", ("plan", "--gpu", "sub/ref.json", *PLAN[3:], "--cards", "2"),
         ("plan_defaults.link",), files=("secret.json",)),
]

# --- flag values ---
for flag in ("--cards", "--batch", "--cards-per-host", "--layers", "--hidden"):
    CASES += _flag_cases("plan", PLAN, flag, POSITIVE_INT_BAD, "2" if flag != "--hidden" else "1024")
CASES += _flag_cases("plan hybrid", HYBRID, "--tp", POSITIVE_INT_BAD, "2")
CASES += _flag_cases("plan hybrid", HYBRID, "--pp", POSITIVE_INT_BAD, "1")
CASES += _flag_cases("plan", PLAN, "--context", INT_BAD, "100")
for flag, good in (("--mem-bw", "1TB/s"), ("--flops", "1e14"), ("--mem-bytes", "24GB"), ("--kv-bytes", "1GB"),
                   ("--params", "8e9")):
    CASES += _flag_cases("plan", PLAN, flag, QUANTITY_BAD, good)
CASES += _flag_cases("plan", PLAN, "--target-tps", ("", "abc", "-1", "nan", "inf", "1e999", "1e308"), "10")
CASES += _flag_cases("plan", PLAN, "--mem-bw", ("3GB", "3 XB/s", "3GB/s/s"), None)
CASES += _flag_cases("plan", PLAN, "--mem-bytes", ("24GB/s", "0.5B"), None)
CASES += _flag_cases("plan target", (*PLAN, "--target-tps", "10"), "--nic",
                     ("", "nosuch", "nan", "1e999Gbit/s", "-1Gbit/s", "1e20Gbit/s", "0.1B/s"), "eth1g")
CASES += _flag_cases("plan", PLAN, "--flops-mode", ("", "nosuch"), "fp16_fp32acc")
CASES += _flag_cases("plan 2 cards", (*PLAN, "--cards", "2"), "--link",
                     ("", "alpha=nan,beta=1GB/s", "alpha=1us,beta=inf", "alpha=1us", "alpha=1e999s,beta=1GB/s",
                      "alpha=-1us,beta=1GB/s", "alpha=1us,beta=1GB/s,beta=2GB/s", "alpha=1us,beta=1e-300B/s"),
                     "alpha=30us,beta=32GB/s")
CASES += _flag_cases("plan sweep", (*SWEEP, "--sweep", "cards=1:2"), "--sweep",
                     ("", "batch=", "batch=0:4", "batch=4:1", "batch=1:1e999", "batch=1:99999999999999999999:1",
                      "foo=1:2", "strategy=", "strategy=pp,zz", "batch=1:2:0", "batch=1,,2"), "batch=1:8")
CASES += [
    Case("plan --sweep product", (*SWEEP, "--sweep", "batch=1:4096:1", "--sweep", "cards=1:32:1"),
         ("--sweep", "configurations")),  # each range fits; their product does not
    Case("plan --sweep product 2", (*SWEEP, "--sweep", "batch=1:65536:1", "--sweep", "cards=1:64:1",
                                    "--sweep", "strategy=pp,tp,hybrid"), ("--sweep",)),
    Case("plan --gpu empty", ("plan", "--gpu", "", *PLAN[3:]), ("--gpu",)),
    Case("plan --model empty", (*PLAN[:3], "--model", "", *PLAN[5:]), ("--model",)),
    Case("plan --gpu unknown", ("plan", "--gpu", "rtx4900", *PLAN[3:]), ("--gpu", "rtx4090")),
]

CASES += _flag_cases("probe", PROBE, "--sizes", ("", ",", "1MiB,,2MiB", "-16B", "0.5B", "nan", "1e999B", "1TiB",
                                                 "\u0663MiB", "1B..1PiB"), "1MiB")
CASES += _flag_cases("probe", PROBE, "--gemv-shape", ("", "x", "0x5", "5x5x5", "1e3x2", "\u0663x3",
                                                      "200000x200000"), "64x64")
CASES += _flag_cases("probe", PROBE, "--batches", ("", "0", "-1", "1,,2", "100000000", "1.5"), "1,2")
CASES += _flag_cases("probe", PROBE, "--budget", FLOAT_BAD, "0.01")
CASES += _flag_cases("probe", PROBE, "--kernels", ("", ",", "nosuch"), "copy")
CASES += _flag_cases("probe", PROBE, "--dtype", ("", ",", "fp99"), "fp16")
CASES += _flag_cases("probe", PROBE, "--device", ("-1", "abc", "1e999", "\u0663", "5"), "0")
CASES += _flag_cases("probe", PROBE[:2], "--backend",
                     ("", "nosuch", "virtual:", "virtual:nosuch", "virtual:rtx4090:0", "virtual:rtx4090:-1",
                      "virtual:rtx4090:100000", "virtual:rtx4090:1e999", "virtual:rtx4090:2+numa=bogus",
                      "virtual:rtx4090:2+nosuch"), "virtual:rtx4090:2")
FLOPS = ("probe", "flops", "--backend", "virtual:rtx4090")
CASES += _flag_cases("probe flops", FLOPS, "--sizes", ("", "0", "1.5", "100000", "-8", "nan"), "64")
CASES += _flag_cases("probe flops", FLOPS, "--batches", ("100000000",), "1")
D2D = ("probe", "d2d", "--backend", "virtual:rtx4090")
CASES += _flag_cases("probe d2d", D2D, "--sizes", ("4B..8B..16B", "4B...256MiB", "1B..1PiB", "1TiB", "..", "4B..",
                                                   "..4B", "256MiB..4B", "0.5B", "5B..7B"), "4B..64B")
CASES += _flag_cases("probe d2d", D2D, "--pairs", ("0-1",), None)
PEER = ("probe", "peer", "--backend", "virtual:rtx4090:2", "--sizes", "4B..64B")
CASES += _flag_cases("probe peer", PEER, "--pairs", ("", ",", "0-0", "0-5", "a-b", "0-1-2", "-1-0"), "0-1")
CASES += _flag_cases("probe peer on one card", ("probe", "peer", "--backend", "virtual:rtx4090:1"), "--pairs",
                     ("0-1",), None)
CASES += [
    Case("probe empty name", ("probe", ""), ("NAME",)),
    Case("probe unknown name", ("probe", "membww", "--backend", "virtual:rtx4090"), ("NAME", "membw")),
    Case("probe host-link --sizes 1TiB", ("probe", "host-link", "--backend", "virtual:rtx4090", "--sizes", "1TiB"),
         ("--sizes",)),
]

CASES += _flag_cases("p2p", P2P, "--sizes", ("", "4B..8B..16B", "4B...256MiB", "1B..1PiB", "1TiB", "0.5B"),
                     "4B..64B")
CASES += _flag_cases("p2p", (*P2P, "--sizes", "4B..64B"), "--pairs", ("", "0-2", "0-0", "x"), "0-1")
CASES += _flag_cases("p2p", (*P2P, "--sizes", "4B..64B"), "--budget", FLOAT_BAD, "0.01")
CASES += _flag_cases("p2p", ("p2p", "--sizes", "4B..64B"), "--backend", ("virtual:rtx4090:1000", "virtual:rtx4090:0",
                                                                        ""), "virtual:rtx4090:2")

CASES += _flag_cases("calibrate", CALIBRATE, "--budget", FLOAT_BAD, "0.01", writes=("out.json",))
CASES += _flag_cases("calibrate", ("calibrate", *CALIBRATE[3:]), "--simulate",
                     ("", "nosuch", "rtx4090:0", "rtx4090:100000", "rtx4090:x", "rtx4090:1e999"), "rtx4090:2",
                     writes=("out.json",))
CASES += _flag_cases("calibrate", CALIBRATE, "--name", ("", "card\x1b]0;owned\x07"), "my-card", writes=("out.json",))
CASES += _flag_cases("calibrate", CALIBRATE[:-2], "-o", ("",), "new.json", writes=("new.json",))
CASES += [
    Case("calibrate -o folder", (*CALIBRATE[:-2], "-o", "plots"), ("-o", "plots"), files=("plots",)),
    Case("calibrate -o exists", (*CALIBRATE[:-2], "-o", "old.json"), ("-o", "old.json", "--force"),
         files=("old.json",)),
    Case("calibrate -o node --force", (*CALIBRATE[:-2], "-o", "node", "--force"), ("-o", "node"), files=("node",)),
    Case("calibrate -o fifo --force", (*CALIBRATE[:-2], "-o", "fifo.json", "--force"), ("-o", "fifo.json"),
         files=("fifo.json",)),
    Case("calibrate --plots empty", (*CALIBRATE, "--plots", ""), ("--plots",)),
    Case("calibrate --plots a file", (*CALIBRATE, "--plots", "old.json"), ("--plots", "old.json"),
         files=("old.json",)),
    Case("calibrate --plots old figure", (*CALIBRATE, "--plots", "plots"), ("--plots", "roofline.png", "--force"),
         files=("plots",)),
]

CASES += [
    Case("export -o empty", (*EXPORT[:-2], "-o", ""), ("-o",)),
    Case("export -o a file", (*EXPORT[:-2], "-o", "old.json"), ("-o", "old.json"), files=("old.json",)),
    Case("export -o a fifo", (*EXPORT[:-2], "-o", "fifo.json"), ("-o", "fifo.json"), files=("fifo.json",)),
    Case("export --format unknown", ("profiles", "export", "rtx4090", "--format", "nosuch", "-o", "exp"),
         ("--format",)),
    Case("profiles show empty", ("profiles", "show", ""), ("NAME",)),
    Case("profiles validate empty", ("profiles", "validate", ""), ("FILE",)),
    Case("profiles show unknown", ("profiles", "show", "rtx4900"), ("rtx4090",)),
    Case("compare empty", ("compare", "", "rtx4090"), ("A",)),
    Case("compare empty b", ("compare", "rtx4090", ""), ("B",)),
    Case("plot empty", ("plot", "", "-o", "figs"), ("PROFILE",)),
    Case("plot -o empty", ("plot", "rtx4090", "-o", ""), ("-o",)),
    Case("plot -o a file", ("plot", "rtx4090", "-o", "old.json"), ("-o", "old.json"), files=("old.json",)),
    Case("plot -o old figure", ("plot", "rtx4090", "-o", "plots"), ("roofline.png", "--force"), files=("plots",)),
    Case("plot -o a fifo", ("plot", "rtx4090", "-o", "fifo.json"), ("-o", "fifo.json"), files=("fifo.json",)),
    Case("plot --model bad", (*PLOT, "--model", "hf-huge.json"), ("--model",), files=("hf-huge.json",)),
]
CASES += _flag_cases("export", EXPORT, "--link", ("", "alpha=nan,beta=1GB/s", "nosuch"), "pcie4-x16",
                     writes=("exp",))
IMPORT = ("profiles", "import", "nccl.txt", "--from", "nccl-tests", "--op", "all-reduce", "-o", "imp.json")
# another tool's output, not a document: each bad file is named; one that reads is not that tool's output
for _name, _named in BAD_DOCUMENTS.items():
    _named = _name if _name.endswith(".json") and _named in ("memory", "name", "count", "title",
                                                              "devices[0].name") else _named
    CASES.append(Case(f"profiles import:{'long-name' if _name == LONG_NAME else _name.replace('/', '_')}",
                      ("profiles", "import", _name, *IMPORT[3:]), (_named,),
                      files=(_name,) if _name in _MADE else ()))
_control(Case("control: profiles import:nccl.txt", IMPORT, (), code=0, files=("nccl.txt",), writes=("imp.json",)))
CASES += [
    Case("import --from unknown", ("profiles", "import", "nccl.txt", "--from", "nccltests", "-o", "imp.json"),
         ("--from", "nccl-tests"), files=("nccl.txt",)),
    Case("import --from the wrong tool", ("profiles", "import", "nccl.txt", "--from", "nvbandwidth", "-o", "imp.json"),
         ("nccl.txt", "--from nccl-tests"), files=("nccl.txt",)),
    Case("import --from twice for one file", (*IMPORT, "--from", "nvbandwidth"), ("--from",), files=("nccl.txt",)),
    Case("import --op with nvbandwidth", ("profiles", "import", "nccl.txt", "--from", "nvbandwidth", "--op",
                                          "all-reduce", "-o", "imp.json"), ("--op",), files=("nccl.txt",)),
    Case("import -o an existing file", (*IMPORT[:-1], "old.json"), ("old.json", "--force"),
         files=("nccl.txt", "old.json")),
    Case("import -o a fifo", (*IMPORT[:-1], "fifo.json"), ("fifo.json",), files=("nccl.txt", "fifo.json")),
    Case("import --card unknown", (*IMPORT, "--card", "rtx4900"), ("rtx4090",), files=("nccl.txt",)),
    Case("import --card a link", (*IMPORT, "--card", "link.json"), ("link.json",), files=("nccl.txt", "link.json")),
]
_control(Case("control: import --card", (*IMPORT, "--card", "rtx4090"), (), code=0, files=("nccl.txt",),
              writes=("imp.json",)))
REPORT = ("report", "rtx4090", "-o", "page.html")
CASES += _doc_cases("report", ("report", "{}", "-o", "page.html"), None, "good.json", writes=("page.html",))
CASES += _flag_cases("report", REPORT, "--cards", POSITIVE_INT_BAD, "2", writes=("page.html",))
CASES += _flag_cases("report", REPORT, "--model", ("", "nosuch", "hf-huge.json"), "llama-3.1-8b",
                     writes=("page.html",))
CASES += [
    Case("report -o not html", ("report", "rtx4090", "-o", "page.txt"), ("-o", "FILE.html")),
    Case("report -o an existing file", ("report", "rtx4090", "-o", "old.html"), ("old.html", "--force"),
         files=("old.html",)),
    Case("report --strategy bad", (*REPORT, "--strategy", "dp"), ("--strategy",)),
    Case("calibrate --report not html", (*CALIBRATE, "--report", "r.txt"), ("--report", "FILE.html")),
    Case("calibrate --report an existing file", (*CALIBRATE, "--report", "old.html"), ("--report", "old.html"),
         files=("old.html",)),
]
AIC_EXPORT = ("profiles", "export", "rtx4090", "--format", "aiconfigurator", "-o", "exp")
CASES += _flag_cases("export", AIC_EXPORT, "--gpus-per-node", (*POSITIVE_INT_BAD, "65"), "4", writes=("exp",))
CASES += _flag_cases("export", AIC_EXPORT, "--nics-per-node", (*POSITIVE_INT_BAD, "65"), "2", writes=("exp",))
CASES += _flag_cases("plot", PLOT, "--cards", POSITIVE_INT_BAD, "2", writes=("figs",))
CASES += _flag_cases("plot", PLOT, "--context", INT_BAD, "100", writes=("figs",))
CASES += _flag_cases("plot", PLOT, "--only", ("", ",", "nosuch"), "roofline", writes=("figs",))

# --- mistyped flags and commands; mpiexec ---
CASES += [
    Case("--versionx", ("--versionx",), ("--versionx", "--version")),
    Case("plan --gpuu", ("plan", "--gpuu", "rtx4090", *PLAN[3:]), ("--gpuu", "--gpu")),
    Case("probe --sizez", (*PROBE, "--sizez", "1MiB"), ("--sizez", "--sizes")),
    Case("plann", ("plann",), ("plann", "plan")),
    Case("no command", (), ("COMMAND",)),
    # under mpiexec every rank meets the same error: rank 0 alone says it (the others exit 2 silently)
    Case("rank 0 of mpiexec", ("plan", "--gpuu", "x"), ("--gpuu",), env=(("PMI_RANK", "0"), ("PMI_SIZE", "2"))),
    Case("rank 1 of mpiexec", ("plan", "--gpuu", "x"), (), env=(("PMI_RANK", "1"), ("PMI_SIZE", "2"))),
    Case("rank 1 of mpiexec, bad profile", ("plan", "--gpu", "notjson.json", *PLAN[3:]), (),
         files=("notjson.json",), env=(("PMI_RANK", "1"), ("PMI_SIZE", "2"))),
]

LONG = "x" * 100_000
CASES += [
    # a value echoed back is cut (LINE_MAX_CHARS)
    Case("plan --mem-bw long", (*PLAN, "--mem-bw", LONG), ("--mem-bw", "characters)")),
    Case("plan --flops-mode long", (*PLAN, "--flops-mode", LONG), ("--flops-mode",)),
    Case("probe long name", ("probe", LONG), ("NAME",)),
    Case("probe --backend long option", ("probe", "membw", "--backend", "virtual:rtx4090:2+" + LONG), ("--backend",)),
    Case("gpucal long command", (LONG,), ("COMMAND",)),
    Case("calibrate --name long", (*CALIBRATE, "--name", LONG), ("--name",)),
    # a trailing slash names a folder: no file is written in its place
    Case("calibrate -o new/", (*CALIBRATE[:-2], "-o", "newdir/"), ("-o", "newdir/", "folder")),
    Case("calibrate -o old.json/ --force", (*CALIBRATE[:-2], "-o", "old.json/", "--force"), ("-o", "old.json/"),
         files=("old.json",)),
    # options of simulated machines and networks: ASCII digits, in range
    Case("probe net --simulate-net seed", ("probe", "net", "--simulate-net", "eth1g+seed=-1"), ("--simulate-net", "seed")),
    Case("probe net --simulate-net noise", ("probe", "net", "--simulate-net", "eth1g+noise=\u0660.\u0665"),
         ("--simulate-net", "noise")),
    Case("probe --backend noise digits", ("probe", "membw", "--backend", "virtual:rtx4090+noise=\u0660.\u0665"),
         ("--backend", "noise")),
    # what this process may use (its address-space limit, MEMORY_LIMIT_BYTES here) bounds a simulated device
    Case("probe membw over the process's memory", (*PROBE, "--sizes", "4GiB", "--kernels", "copy"), ("--sizes",)),
    Case("probe d2d over the process's memory", (*D2D, "--sizes", "2GiB"), ("--sizes",)),
    Case("probe --backend PCIe Gen9", ("probe", "host-link", "--backend", "virtual:gen9.json"),
         ("--backend", "gen9.json", "pcie_generation"), files=("gen9.json",)),
]

# the decode probes (docs/decode.md)
FILES["tiny-model.json"] = _text(json.dumps({"schema": "gpucal.model/1", "name": "tiny", "params": 1e8, "layers": 2,
                                             "hidden": 128, "heads": 4, "kv_heads": 2, "head_dim": 32, "ffn": 256,
                                             "vocab": 1000}))
DECODE = ("probe", "decode", "--backend", "virtual:rtx4090", "--model", "tiny-model.json", "--context", "16",
          "--batch", "2")
VIRTUAL = ("--backend", "virtual:rtx4090")
CASES += [
    Case("probe decode without --model", ("probe", "decode", *VIRTUAL), ("--model",)),
    Case("probe decode --model unknown", ("probe", "decode", *VIRTUAL, "--model", "nosuch-7b"), ("--model", "nosuch-7b")),
    Case("probe decode --tp not dividing the heads", (*DECODE, "--tp", "3"), ("--tp", "3"), files=("tiny-model.json",)),
    Case("probe decode --tp 0", (*DECODE, "--tp", "0"), ("--tp",), files=("tiny-model.json",)),
    Case("probe decode --dtype fp8", (*DECODE, "--dtype", "fp8"), ("--dtype",), files=("tiny-model.json",)),
    Case("probe decode --context 0", (*DECODE, "--context", "0"), ("--context",), files=("tiny-model.json",)),
    Case("probe decode --batch huge", (*DECODE, "--batch", "100000000"), ("--batches",), files=("tiny-model.json",)),
    Case("probe membw --context", (*PROBE, "--context", "8"), ("--context",)),
    Case("probe membw --tp", (*PROBE, "--tp", "2"), ("--tp",)),
    Case("probe membw --model", (*PROBE, "--model", "llama-3.1-8b"), ("--model",)),
    Case("probe decode-gemm --shapes 4x", ("probe", "decode-gemm", *VIRTUAL, "--shapes", "4x"), ("--shapes",)),
    Case("probe decode-gemm --shapes 0x4", ("probe", "decode-gemm", *VIRTUAL, "--shapes", "0x4"), ("--shapes",)),
    Case("probe decode-gemm --dtype fp99", ("probe", "decode-gemm", *VIRTUAL, "--dtype", "fp99"), ("--dtype",)),
    Case("probe attention --shapes", ("probe", "attention", *VIRTUAL, "--shapes", "4x4"), ("--shapes",)),
    Case("probe launch --batches", ("probe", "launch", *VIRTUAL, "--batches", "2"), ("--batches",)),
    Case("probe allreduce on one card", ("probe", "allreduce", "--backend", "virtual:rtx4090:1"), ("--backend",)),
    Case("probe decode --shapes", (*DECODE, "--shapes", "4x4"), ("--shapes",), files=("tiny-model.json",)),
    Case("probe allreduce --sizes and --batches", ("probe", "allreduce", "--backend", "virtual:rtx4090:2", "--sizes",
                                                   "1MiB", "--batches", "2"), ("--sizes", "--batches")),
    Case("probe allreduce --kernels", ("probe", "allreduce", "--backend", "virtual:rtx4090:2", "--kernels", "copy"),
         ("--kernels",)),
]

CONTROLS += [
    # a link whose beta is unknown is drawn as such
    Case("control: plot a link of unknown beta", ("plot", "nullbeta.json", "-o", "figs", "--only", "p2p"), (), code=0,
         files=("nullbeta.json",), writes=("figs",)),
    # an ASCII-only terminal: what it cannot show is written as escapes, not a crash
    Case("control: plan on an ASCII terminal", (*PLAN, "--strategy", "tp", "--cards", "2"), (), code=0,
         env=(("PYTHONIOENCODING", "ascii"),)),
    # calibrate, export and plot make the folders an output needs (docs/calibrate.md)
    Case("control: calibrate -o into a new folder", (*CALIBRATE[:-2], "-o", "no/such/out.json"), (), code=0,
         writes=("no",)),
    Case("control: plan --sweep product", (*SWEEP, "--sweep", "batch=1:64:1", "--sweep", "cards=1:8:1"), (), code=0),
    Case("control: export", EXPORT, (), code=0, writes=("exp",)),
    Case("control: probe decode", DECODE, (), code=0, files=("tiny-model.json",)),
    Case("control: probe decode --tp 2 on two cards", (*DECODE[:3], "virtual:rtx4090:2", *DECODE[4:], "--tp", "2",
                                                        "--graph"), (), code=0, files=("tiny-model.json",)),
    Case("control: probe launch", ("probe", "launch", *VIRTUAL), (), code=0),
    Case("control: probe d2d", (*D2D, "--sizes", "4B..64B"), (), code=0),
    Case("control: plot with --force over an old figure", (*PLOT[:-1], "plots", "--force"), (), code=0,
         files=("plots",), writes=("plots",)),
]

_IDS = [c.id for c in CASES + CONTROLS]
assert len(_IDS) == len(set(_IDS)), sorted({i for i in _IDS if _IDS.count(i) > 1})


@dataclass
class Outcome:
    code: int | None
    stdout: str
    stderr: str
    before: dict[str, str] = field(default_factory=dict)
    after: dict[str, str] = field(default_factory=dict)
    hung: bool = False


def _snapshot(folder: Path) -> dict[str, str]:
    """Every entry under ``folder``: what it is, and for regular files their bytes' hash."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                out[rel] = "link->" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = f"special {oct(os.lstat(path).st_mode)}"
    return out


def _limits() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT_BYTES, MEMORY_LIMIT_BYTES))
    os.setsid()


def _run(case: Case, root: Path) -> Outcome:
    folder = root / f"case{_IDS.index(case.id)}"
    folder.mkdir()
    for name in case.files:
        FILES[name](folder / name)
    if case.id == "plan --gpu ref outside":  # the profile lives in sub/, the secret beside the user
        (folder / "sub").mkdir()
        FILES["ref.json"](folder / "sub" / "ref.json")
    before = _snapshot(folder)
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "PMI_RANK", "PMI_SIZE", "PMIX_RANK",
                                                              "OMPI_COMM_WORLD_RANK")}
    env.update(case.env)
    proc = subprocess.Popen([sys.executable, "-m", "gpucal", *case.argv], cwd=folder, env=env, text=True,
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            preexec_fn=_limits)
    try:
        out, err = proc.communicate(timeout=TIME_LIMIT_S)
        hung = False
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        hung = True
    return Outcome(proc.returncode, out, err, before, _snapshot(folder), hung)


@pytest.fixture(scope="module")
def outcomes(request, tmp_path_factory):
    """The selected cases, started together in a pool; each test waits for its own."""
    root = tmp_path_factory.mktemp("bad-input")
    wanted = {item.callspec.params["case"].id for item in request.session.items
              if item.module is request.module and "case" in getattr(getattr(item, "callspec", None), "params", {})}
    pool = ThreadPoolExecutor(max_workers=max(2, min(4, (os.cpu_count() or 2))))
    futures = {c.id: pool.submit(_run, c, root) for c in CASES + CONTROLS if c.id in wanted}
    yield futures
    pool.shutdown(wait=True, cancel_futures=True)


def _check(case: Case, o: Outcome) -> None:
    assert not o.hung, f"did not finish within {TIME_LIMIT_S:g} s"
    lines = [line for line in o.stderr.splitlines() if line.strip()]
    assert "Traceback" not in o.stderr, o.stderr[-3000:]
    assert "Warning" not in o.stderr, o.stderr[-3000:]
    assert o.code == case.code, f"exit {o.code}, expected {case.code}: {o.stderr[-2000:]}"
    if case.code == 0:
        def written(name):
            return any(name == w or name.startswith(w + "/") for w in case.writes)

        made = set(o.after) - set(o.before)
        assert all(written(m) for m in made), made
        kept = {k: v for k, v in o.before.items() if not written(k)}
        assert {k: o.after.get(k) for k in kept} == kept
        assert made or not case.writes, "wrote nothing"
        return
    if dict(case.env).get("PMI_RANK", "0") != "0":
        assert lines == []
    else:
        assert len(lines) == 1, o.stderr[-3000:]
        line = lines[0]
        assert line.startswith("gpucal"), line
        assert "error" in line, line
        assert len(line) <= LINE_MAX_CHARS, line[:300] + "..."
        for name in case.names:
            assert name.lower() in line.lower(), f"{name!r} not named in: {line}"
        assert "SECRET-TOKEN" not in o.stderr
        assert "\x1b" not in o.stderr and "\x07" not in o.stderr, repr(line)
    assert o.stdout == "", o.stdout[-2000:]
    assert o.after == o.before, {"before": o.before, "after": o.after}


@pytest.mark.parametrize("case", CASES + CONTROLS, ids=_IDS)
def test_bad_input(case, outcomes):
    _check(case, outcomes[case.id].result())


def test_the_table_covers_every_command():
    """Every command and subcommand of the parser meets bad input here."""
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)
    seen = {c.argv[0] for c in CASES if c.argv}
    missing = commands - seen - {"info"}  # info takes no input but --json
    assert not missing, missing


@pytest.mark.parametrize("argv", [
    PLAN,
    ("probe", "d2d", "--backend", "virtual:rtx4090:1", "--sizes", "4B..64B"),
    ("calibrate", "--simulate", "rtx4090:2", "--quick", "--no-kernel-check", "--json", "-o", "out.json"),
    ("plot", "rtx4090", "-o", "figs", "--only", "roofline"),
    ("profiles", "show", "rtx4090"),
    ("compare", "rtx4090", "h100-sxm"),
])
def test_a_name_that_is_a_builtin_and_a_file_here_says_which_was_taken(argv, tmp_path):
    """A file ``./rtx4090`` never silently replaces the built-in: the built-in is taken, and a note says so
    once; ``./rtx4090`` names the file."""
    (tmp_path / "rtx4090").write_bytes(b"not a profile: reading it would fail")
    proc = subprocess.run([sys.executable, "-m", "gpucal", *argv], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    notes = [line for line in proc.stderr.splitlines() if "note: rtx4090 is the built-in profile" in line]
    assert len(notes) == 1, proc.stderr
    assert "./rtx4090" in notes[0]
    explicit = [a.replace("rtx4090", "./rtx4090", 1) if "rtx4090" in a else a for a in argv]
    if argv[0] in ("plan", "profiles"):  # the file itself, named as a path: read, and refused for what it is
        proc = subprocess.run([sys.executable, "-m", "gpucal", *explicit], cwd=tmp_path, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and "./rtx4090" in proc.stderr and "note:" not in proc.stderr, proc.stderr
