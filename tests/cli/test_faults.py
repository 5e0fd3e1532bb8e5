"""Faults as users meet them: Ctrl-C and SIGTERM at any moment, a full disk, outputs that are not regular
files, output paths checked before measuring, empty values, mistyped flags, MPI ranks, warnings, and text
from a file that would drive the terminal. Subprocesses, as users run gpucal; signals are sent after the
child says where it is (a line on stderr or stdout), never after a guessed time alone."""

from __future__ import annotations

import json
import os
import resource
import signal
import stat
import subprocess
import sys
import textwrap
import time
import weakref
from pathlib import Path

import pytest
from conftest import run_gpucal

from gpucal import cli, files, profiles
from gpucal.cli import main
from gpucal.commands import profiles as profiles_command
from gpucal.commands.calibrate import local
from gpucal.commands.calibrate.outputs import write_profile
from gpucal.errors import GpucalError
from gpucal.figures import FIGURES
from gpucal.figures.files import write_plots

FIXTURE = str(Path(__file__).parents[1] / "fixtures" / "profile-simulated-rtx4090x2.json")
SIMULATE = ("calibrate", "--simulate", "rtx4090:2", "--no-kernel-check", "--budget", "0.01")


def one_line(done, code: int, *parts: str) -> str:
    assert done.returncode == code, (done.returncode, done.stderr)
    err = done.stderr.strip()
    assert "Traceback" not in done.stderr and len(err.splitlines()) == 1, done.stderr
    for part in parts:
        assert part in err, err
    return err


def env():
    out = dict(os.environ)
    out.pop("COLUMNS", None)
    return out


def no_temporaries(folder: Path) -> None:
    assert [p for p in folder.rglob("*") if p.name.endswith(".tmp")] == []


# -- Ctrl-C and SIGTERM ----------------------------------------------------------------------------------------

HOOK = textwrap.dedent("""
    import os, runpy, signal, sys
    when = sys.argv.pop(1)

    class Interrupter:  # sends SIGINT to this process as Python starts to import `when`
        def find_spec(self, name, path=None, target=None):
            if name == when:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None

    sys.meta_path.insert(0, Interrupter())
    sys.argv[0] = "gpucal"
    runpy.run_module("gpucal", run_name="__main__", alter_sys=True)
""")


@pytest.mark.parametrize("module, argv", [
    *((m, ("profiles", "list")) for m in ("gpucal.cli", "argparse", "gpucal.render", "gpucal.commands",
                                          "gpucal.commands.options", "gpucal.commands.profiles", "rich.console",
                                          "gpucal.profiles.io", "json",
                                          "datetime", "_datetime", "pydantic_core")),
    # a command package and each of its parts (imported only when that command runs)
    *((m, ("calibrate", "--help")) for m in ("gpucal.commands.calibrate", "gpucal.commands.calibrate.host",
                                             "gpucal.commands.calibrate.outputs", "gpucal.commands.calibrate.cluster")),
    *((m, ("plan", "--help")) for m in ("gpucal.commands.plan", "gpucal.commands.plan.sweep")),
    *((m, ("probe", "--list")) for m in ("gpucal.commands.probe", "gpucal.commands.probe.net")),
])
def test_ctrl_c_while_python_imports_gpucal_is_one_line(module, argv):
    done = subprocess.run(check=False, args=[sys.executable, "-c", HOOK, module, *argv], capture_output=True, text=True,
                          timeout=120, env=env())
    err = one_line(done, 130, "interrupted")
    assert err in ("gpucal: interrupted", f"gpucal {argv[0]}: interrupted"), err


STARTER = textwrap.dedent("""
    import importlib.util, sys
    spec = importlib.util.find_spec("gpucal.__main__")
    code = spec.loader.get_code("gpucal.__main__")
    sys.argv = ["gpucal", *sys.argv[1:]]
    try:
        print("ready", flush=True)
    except KeyboardInterrupt:  # the signal came before gpucal ran (this harness's own window): not gpucal's
        sys.exit(99)
    exec(code, {"__name__": "__main__", "__file__": spec.origin})
""")


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"),
                                                (signal.SIGTERM, 143, "terminated")])
def test_a_signal_right_after_start_is_one_line(signum, code, word):
    """Python itself has started (the child says ready); gpucal's own code runs from there: a signal at any of
    these moments, while it imports and before its handlers, ends in one line."""
    for delay in (0.0, 0.01, 0.05, 0.15, 0.3):
        child = subprocess.Popen([sys.executable, "-c", STARTER, "profiles", "show", "rtx4090"], env=env(),
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"
        if delay:
            time.sleep(delay)
        child.send_signal(signum)
        _, err = child.communicate(timeout=120)
        assert "Traceback" not in err, err  # whenever the signal came
        if child.returncode in (0, 99):
            continue  # finished before the signal came, or it came before gpucal started
        if child.returncode == -signal.SIGINT:
            assert err.strip() == "", err  # at exit Python's own handler is gone: the signal ends it, silently
            continue
        if signum == signal.SIGTERM and child.returncode == -signal.SIGTERM:
            continue  # before gpucal's handler is set, SIGTERM ends the process as it always does: nothing written
        assert child.returncode == code, err
        assert err.strip().splitlines()[-1].endswith(word), err


def _calibrate_until_it_measures(tmp_path, *extra):
    child = subprocess.Popen([sys.executable, "-m", "gpucal", *SIMULATE, "-o", str(tmp_path / "out" / "p.json"),
                              *extra], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env(),
                             cwd=tmp_path)
    lines = []
    for line in child.stderr:  # progress lines: "gpucal calibrate: [i/N] step"
        lines.append(line)
        if "[3/" in line:
            return child, lines
    raise AssertionError("".join(lines))


@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "(interrupted)"),
                                                (signal.SIGTERM, 143, "(terminated)")])
def test_a_signal_mid_calibration_cleans_up_and_says_so(tmp_path, signum, code, word):
    child, _ = _calibrate_until_it_measures(tmp_path)
    child.send_signal(signum)
    _, err = child.communicate(timeout=120)
    assert child.returncode == code, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    between_steps = f"gpucal calibrate: {word.strip('()')}"
    assert last == between_steps or (last.startswith("gpucal calibrate: error: step ") and word in last
                                     and "no profile written" in last), last
    assert not (tmp_path / "out" / "p.json").exists()
    no_temporaries(tmp_path)


@pytest.mark.parametrize("exc, code, word", [("KeyboardInterrupt", 130, "interrupted"),
                                             ("Terminated", 143, "terminated")])
def test_a_signal_after_the_profile_is_written_says_it_is_complete(tmp_path, monkeypatch, capsys, exc, code, word):
    def cut(*args, **kwargs):  # the signal comes while the summary is printed
        raise KeyboardInterrupt() if exc == "KeyboardInterrupt" else cli.Terminated()
    monkeypatch.setattr(local, "_report", cut)
    path = tmp_path / "p.json"
    assert main([*SIMULATE, "-o", str(path)]) == code
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"gpucal calibrate: {word} after writing {path} (complete)"
    assert profiles.load(path).profile.source == "simulated"
    no_temporaries(tmp_path)


def test_a_signal_while_the_profile_is_written_waits_for_it(tmp_path, monkeypatch, capsys):
    """Ctrl-C in the write window itself: the file is completed (or never there), never half, never a
    temporary file; the message says which."""
    real = files._commit

    def commit_then_signal(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # held: delivered once the file is in place
        return real(*args, **kwargs)
    monkeypatch.setattr(files, "_commit", commit_then_signal)
    path = tmp_path / "p.json"
    assert main([*SIMULATE, "-o", str(path)]) == 130
    assert capsys.readouterr().err.strip().splitlines()[-1] == \
        f"gpucal calibrate: interrupted after writing {path} (complete)"
    assert profiles.load(path).profile.source == "simulated"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


# -- outputs: regular files only, checked before measuring, full disks --------------------------------------------

def test_a_device_node_is_never_replaced_even_with_force(tmp_path):
    """``-o /dev/null --force``, on a device node of the test's own (as root, broken code would replace the
    real /dev/null): refused before measuring, the node as it was, also through a symbolic link."""
    node = tmp_path / "null"
    try:
        os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except PermissionError:
        os.mkfifo(node)  # not root: a FIFO, refused alike
    before = os.lstat(node)
    one_line(run_gpucal(*SIMULATE, "-o", str(node), "--force", cwd=tmp_path), 2,
             f"gpucal calibrate: error: -o: {node}: is a ")
    link = tmp_path / "null.json"
    link.symlink_to(node)
    one_line(run_gpucal(*SIMULATE, "-o", str(link), "--force", cwd=tmp_path), 2, f"-o: {link}: is a ")
    after = os.lstat(node)
    assert link.is_symlink() and (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["null", "null.json"]


def test_every_output_path_is_checked_before_measuring(tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("a file")
    for args, said in (((("--plots", str(taken))), f"--plots: {taken}: not a folder"),
                       (("--plots", ""), "--plots: an empty value"),
                       (("-o", ""), "-o: an empty value"),
                       (("-o", str(taken / "p.json")), f"-o: {taken / 'p.json'}: cannot write it: a part of the path is not a folder")):
        argv = [*SIMULATE, *args] if "-o" in args else [*SIMULATE, "-o", str(tmp_path / "p.json"), *args]
        done = run_gpucal(*argv, cwd=tmp_path)
        one_line(done, 2, f"gpucal calibrate: error: {said}")  # one line: no progress, nothing measured
        assert not (tmp_path / "p.json").exists() and not (tmp_path / "profiles").exists()
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "roofline.png").write_bytes(b"mine")
    done = run_gpucal(*SIMULATE, "-o", str(tmp_path / "p.json"), "--plots", str(tmp_path / "plots"))
    one_line(done, 2, "--plots:", "roofline.png: exists; pass --force")
    assert (tmp_path / "plots" / "roofline.png").read_bytes() == b"mine" and not (tmp_path / "p.json").exists()


def test_an_empty_simulate_is_refused_not_the_gpu_path(tmp_path):
    one_line(run_gpucal("calibrate", "--simulate", "", "-o", str(tmp_path / "p.json")), 2,
             "gpucal calibrate: error: --simulate: an empty value")


def _limited(limit_bytes: int):
    def set_limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit_bytes, limit_bytes))
    return set_limit


def test_a_full_disk_on_export_is_one_line_and_keeps_the_old_export(tmp_path):
    old = tmp_path / "h100-sxm.yaml"
    old.write_text("old export\n")
    done = subprocess.run(check=False, args=[sys.executable, "-m", "gpucal", "profiles", "export", "h100-sxm", "--format",
                           "aiconfigurator", "-o", str(tmp_path), "--force"], capture_output=True, text=True,
                          timeout=120, env=env(), preexec_fn=_limited(200))
    one_line(done, 1, f"-o: {old}: cannot write it (File too large); the file there is unchanged")
    assert old.read_text() == "old export\n"
    no_temporaries(tmp_path)


def test_plot_keeps_existing_pngs_without_force_and_on_a_full_disk(tmp_path):
    pytest.importorskip("matplotlib")
    (tmp_path / "roofline.png").write_bytes(b"my roofline")
    done = run_gpucal("plot", FIXTURE, "-o", str(tmp_path), "--only", "roofline,plan")
    one_line(done, 2, "gpucal plot: error: -o:", "roofline.png: exists; pass --force")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roofline.png"]  # plan.png not drawn either
    done = subprocess.run(check=False, args=[sys.executable, "-m", "gpucal", "plot", FIXTURE, "-o", str(tmp_path), "--only",
                           "roofline,plan", "--force"], capture_output=True, text=True, timeout=300, env=env(),
                          preexec_fn=_limited(20_000))
    one_line(done, 1, "gpucal plot: error: -o:", "File too large")
    assert (tmp_path / "roofline.png").read_bytes() == b"my roofline" and not (tmp_path / "plan.png").exists()
    no_temporaries(tmp_path)
    done = run_gpucal("plot", FIXTURE, "-o", str(tmp_path), "--only", "roofline,plan", "--force")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "roofline.png").read_bytes().startswith(b"\x89PNG") and (tmp_path / "plan.png").exists()
    one_line(run_gpucal("plot", FIXTURE, "-o", ""), 2, "gpucal plot: error: -o: an empty folder name")


# -- messages ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv, said", [
    (["--versionx"], "gpucal: error: unrecognized option --versionx; did you mean --version?"),
    (["plan", "--gpuu", "rtx4090"], "gpucal plan: error: unrecognized option --gpuu; did you mean --gpu?"),
    (["plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--cardz", "2"],
     "gpucal plan: error: unrecognized option --cardz; did you mean --cards?"),
    (["plann"], "invalid choice: 'plann'"),
])
def test_a_mistyped_flag_is_named_with_the_closest_match(argv, said):
    err = one_line(run_gpucal(*argv), 2, said)
    if argv == ["plann"]:
        assert "did you mean plan?" in err


def test_under_mpiexec_only_rank_0_prints_an_error():
    for variable in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK"):
        quiet = run_gpucal("plan", "--gpuu", "rtx4090", env_extra={variable: "1"})
        assert quiet.returncode == 2 and quiet.stderr == ""
        quiet = run_gpucal("plan", "--gpu", "rtx4091", "--model", "llama-3.1-8b", env_extra={variable: "3"})
        assert quiet.returncode == 2 and quiet.stderr == ""
        one_line(run_gpucal("plan", "--gpuu", "rtx4090", env_extra={variable: "0"}), 2, "--gpuu")


def test_a_warning_is_one_line_without_a_path(tmp_path):
    code = textwrap.dedent("""
        import sys, numpy as np
        from gpucal.commands import info
        def run(args):
            np.float64(1e308) * np.float64(10)
            return 0
        info.run = run
        from gpucal.cli import main
        sys.exit(main(["info"]))
    """)
    done = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 0
    assert done.stderr == "gpucal: warning: RuntimeWarning: overflow encountered in scalar multiply\n"


def test_a_bug_is_one_line_not_a_traceback(tmp_path):
    code = textwrap.dedent("""
        import sys
        from gpucal.commands import info
        def run(args):
            raise TypeError("a bug")
        info.run = run
        from gpucal.cli import main
        sys.exit(main(["info"]))
    """)
    done = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env())
    one_line(done, 1, "gpucal info: internal error", "TypeError: a bug")


# -- text from files reaches the terminal escaped -------------------------------------------------------------

HOSTILE = "\x1b]0;owned\x07\x1b[2J\u202e\x9b31m"


def test_an_error_quoting_a_hostile_name_is_escaped():
    done = run_gpucal("plan", "--gpu", f"x{HOSTILE}", "--model", "llama-3.1-8b")
    assert done.returncode == 2
    for char in "\x1b\x07\u202e\x9b":
        assert char not in done.stderr
    assert "\\x1b]0;owned\\x07" in done.stderr


def test_a_hostile_profile_is_refused_without_echoing_its_controls(tmp_path):
    data = json.loads(Path(FIXTURE).read_text())
    data["notes"] = [f"note {HOSTILE}"]
    path = tmp_path / "hostile.json"
    path.write_text(json.dumps(data))
    for argv in (("profiles", "show", str(path)), ("profiles", "show", str(path), "--json")):
        done = run_gpucal(*argv)
        assert done.returncode == 2 and "notes[0]" in done.stderr, done.stderr
        for char in "\x1b\x07\u202e\x9b":
            assert char not in done.stdout and char not in done.stderr


def test_markup_in_a_profile_is_shown_as_written(tmp_path):
    data = json.loads(Path(FIXTURE).read_text())
    data["notes"] = ["note [bold]not markup[/bold] :smile:"]
    path = tmp_path / "markup.json"
    path.write_text(json.dumps(data))
    done = run_gpucal("profiles", "show", str(path))
    assert done.returncode == 0, done.stderr
    assert "[bold]not markup[/bold] :smile:" in done.stdout


# -- plots of extreme (schema-valid or not) values never crash ---------------------------------------------------

def _valued(q, value):
    """The quantity ``q`` with ``value``, not validated (the value may lie beyond every bound)."""
    return q.model_copy(update={"value": value})


def _scaled(profile, scale):
    """``profile`` with times and rates scaled as the test scales the JSON, built without validation."""
    devices = [d.model_copy(update={
        "memory_bandwidth_Bps": _valued(d.memory_bandwidth_Bps, d.memory_bandwidth_Bps.value * scale),
        "dense_flops": {mode: _valued(q, q.value / scale) if q.value else q for mode, q in d.dense_flops.items()}})
        for d in profile.devices]
    update = {"devices": devices}
    if profile.fits:
        update["fits"] = [f.model_copy(update={"points": [(n, t * scale, *rest) for n, t, *rest in f.points]})
                          for f in profile.fits]
    if profile.kernels:
        update["kernels"] = [k.model_copy(update={"median_s": k.median_s * scale}) for k in profile.kernels]
    if profile.links:
        update["links"] = [e.model_copy(update={"beta_Bps": _valued(e.beta_Bps, e.beta_Bps.value / scale)}) for e in profile.links]
    return profile.model_copy(update=update)


@pytest.mark.parametrize("scale", [1e-290, 1e290])
def test_extreme_values_are_drawn_or_skipped_saying_why(tmp_path, scale):
    """Times and rates scaled by 1e±290 (beyond any schema bound, straight to the figures): every figure is
    written or skipped with a reason, never a matplotlib traceback; nothing half written."""
    pytest.importorskip("matplotlib")

    data = json.loads(Path(FIXTURE).read_text())
    for device in data["devices"]:
        device["memory_bandwidth_Bps"]["value"] *= scale
        for entry in device["dense_flops"].values():
            if isinstance(entry, dict) and entry.get("value"):
                entry["value"] /= scale
    for fit in data.get("fits") or []:
        fit["points"] = [[n, t * scale, *rest] for n, t, *rest in fit["points"]]
    for kernel in data.get("kernels") or []:
        kernel["median_s"] *= scale
    for link in data.get("links") or []:
        link["beta_Bps"]["value"] /= scale
    # the same values typed, without validation (which would refuse them): whichever the figures read
    doc = profiles.Document(kind="profile", name="extreme", origin="extreme.json", data=data,
                            typed=_scaled(profiles.load(FIXTURE).profile, scale))
    results = write_plots(doc, tmp_path, force=True)
    assert [name for name, _, _ in results] == list(FIGURES)
    for name, path, reason in results:
        assert (path is not None) != (reason is not None)
        assert path is None or path.read_bytes().startswith(b"\x89PNG")
    no_temporaries(tmp_path)


def test_a_profile_that_does_not_validate_is_kept_aside_without_replacing_anything(tmp_path):
    target = tmp_path / "p.json"
    (tmp_path / "p.json.invalid").write_text("the user's own\n")
    with pytest.raises(GpucalError, match=r"p\.json\.invalid\.2"):
        write_profile({"schema": "gpucal.profile/1", "name": "x"}, str(target), force=False)
    assert (tmp_path / "p.json.invalid").read_text() == "the user's own\n"
    assert json.loads((tmp_path / "p.json.invalid.2").read_text())["name"] == "x"
    assert not target.exists()


PLAN_ARGS = ("plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--strategy", "tp", "--cards", "2", "--batch", "1")


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="no /dev/full here")
def test_a_full_stdout_is_one_line_and_exit_1():
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "gpucal", *PLAN_ARGS], stdout=full, stderr=subprocess.PIPE,
                              text=True, env=env(), timeout=120)
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.strip() == "gpucal plan: error: cannot write the output (No space left on device)"


def test_a_closed_stdout_and_an_ascii_terminal_are_not_crashes():
    closed = subprocess.run([sys.executable, "-m", "gpucal", *PLAN_ARGS], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env=env(), timeout=120,
                            preexec_fn=lambda: os.close(1))
    assert closed.returncode == 0 and closed.stderr == "", closed.stderr
    ascii_only = subprocess.run([sys.executable, "-m", "gpucal", *PLAN_ARGS], capture_output=True, text=True,
                                env={**env(), "PYTHONIOENCODING": "ascii"}, timeout=120)
    assert ascii_only.returncode == 0 and ascii_only.stderr == "", ascii_only.stderr
    assert "\\xb5s" in ascii_only.stdout  # µs, which ASCII lacks, as an escape


def test_a_signal_swallowed_in_a_callback_still_stops_with_one_line(monkeypatch, capsys):
    """CPython drops an exception raised in a weakref or GC callback ("Exception ignored in ..."): a Ctrl-C or
    SIGTERM whose handler ran there must still end the command as interrupted, not exit 0, and quietly."""

    def done_then_signalled(args):
        class Thing:
            pass

        thing = Thing()
        ref = weakref.ref(thing, lambda r: cli._on_sigterm(signal.SIGTERM, None))  # the handler, in a callback
        del thing  # the callback runs here; its Terminated is swallowed
        assert ref() is None
        return 0

    monkeypatch.setattr(profiles_command, "run_list", done_then_signalled)
    before = signal.getsignal(signal.SIGTERM)
    assert cli.main(["profiles", "list"]) == 143
    err = capsys.readouterr().err
    assert err.strip() == "gpucal profiles: terminated after it had done its work (every output is complete)", err
    assert signal.getsignal(signal.SIGTERM) is before  # and gpucal's handlers are gone again
