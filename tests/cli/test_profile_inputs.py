"""``profiles show|validate|export`` and ``compare`` on every kind of bad file: exit 2, one line on stderr
naming the file (and the field), nothing on stdout, no traceback; a FIFO never blocks."""

import json
import os
import subprocess
import sys

import pytest
from conftest import run_gpucal

from gpucal import profiles as profile
from gpucal.calibrate.compare import ratio
from gpucal.cli import main

LONG = "a" * 100_000


def _good():
    return profile.load_builtin("profile", "rtx4090").data


def _write(path, data):
    path.write_text(json.dumps(data))
    return path


def _mutated(path, change):
    data = json.loads(json.dumps(_good()))
    change(data)
    return _write(path, data)


# kind -> (make(tmp) -> the argument, words the one line must hold). A FIFO has its own test, in a process of
# its own: were it to block, a timeout ends it.
KINDS = {
    "folder": (lambda t: (t / "dir").mkdir() or t / "dir", "is a folder"),
    "/dev/zero": (lambda t: "/dev/zero", "character device"),
    "missing": (lambda t: t / "none.json", "No such file"),
    "long name": (lambda t: str(t / LONG), "100,0"),
    "not JSON": (lambda t: (t / "x.json").write_text("{") and t / "x.json", "not valid JSON"),
    "not UTF-8": (lambda t: (t / "x.json").write_bytes(b'{"a": "\xff"}') and t / "x.json", "not UTF-8"),
    "deep": (lambda t: (t / "x.json").write_text("[" * 100_000 + "]" * 100_000) and t / "x.json", "nested too deeply"),
    "1e999": (lambda t: (t / "x.json").write_text(json.dumps(_good()).replace(
        str(_good()["devices"][0]["memory_bytes"]["value"]), "1e999", 1)) and t / "x.json",
        "devices[0].memory_bytes.value: the number 1e999 is not a finite number"),
    "out of range": (lambda t: _mutated(t / "x.json", lambda d: d["devices"][0]["memory_bytes"].update(value=1e300)),
                     "devices[0].memory_bytes.value: 1e+300 is greater than the maximum"),
    "tiny rate": (lambda t: _mutated(t / "x.json", lambda d: d["devices"][0]["memory_bandwidth_Bps"].update(
        value=1e-300)), "devices[0].memory_bandwidth_Bps.value: 1e-300 is less than the minimum"),
    "a million devices": (lambda t: _mutated(t / "x.json", lambda d: d["devices"][0].update(count=1_000_000)),
                          "devices[0].count"),
    "control characters": (lambda t: _mutated(t / "x.json", lambda d: d.update(title="\x1b]0;pwned\x07")),
                           "title: contains the control character U+001B"),
}

COMMANDS = {
    "show": lambda f: ["profiles", "show", f],
    "validate": lambda f: ["profiles", "validate", f],
    "export": lambda f: ["profiles", "export", f, "--format", "llm-analysis"],
    "compare A": lambda f: ["compare", f, "rtx4090"],
    "compare B": lambda f: ["compare", "rtx4090", f],
}


@pytest.mark.parametrize("command", COMMANDS)
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_file_is_one_line_naming_it(kind, command, tmp_path, capsys):
    make, words = KINDS[kind]
    argument = str(make(tmp_path))
    code = main(COMMANDS[command](argument))
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"gpucal {COMMANDS[command]('')[0]}: error: ")
    assert words in lines[0]
    assert profile.shown_name(argument) in lines[0] and len(lines[0]) < 400


def test_a_fifo_does_not_block_any_command(tmp_path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    for command, argv in COMMANDS.items():
        try:  # a blocking open would wait here for a writer that never comes
            out = subprocess.run([sys.executable, "-m", "gpucal", *argv(str(fifo))], capture_output=True, text=True,
                                 timeout=60, check=False)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{command} blocked on a FIFO")
        assert out.returncode == 2 and out.stdout == "", command
        flag = {"compare A": "A: ", "compare B": "B: "}.get(command, "")
        expected = f"gpucal {argv('')[0]}: error: {flag}{fifo}: is a FIFO (named pipe); gpucal reads documents only " \
            "from regular files"
        assert out.stderr.splitlines() == [expected], command


def test_a_built_in_name_wins_over_a_file_here_and_says_so(tmp_path):
    (tmp_path / "rtx4090").write_text(json.dumps(dict(_good(), title="the file here")))
    shown = run_gpucal("profiles", "show", "rtx4090", cwd=tmp_path)
    assert shown.returncode == 0 and "the file here" not in shown.stdout
    assert shown.stderr.splitlines() == [("gpucal profiles: note: rtx4090 is the built-in profile; the file rtx4090 "
                                          "in this folder was not read (write ./rtx4090 to use the file)")]
    assert "the file here" in run_gpucal("profiles", "show", "./rtx4090", cwd=tmp_path).stdout
    compared = run_gpucal("compare", "rtx4090", "h100-sxm", cwd=tmp_path)
    assert compared.returncode == 0 and "note: rtx4090 is the built-in profile" in compared.stderr


def test_a_reference_outside_the_profiles_folder_is_not_read(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "secret.json").write_text(json.dumps({"schema": "SECRET-VALUE"}))
    (tmp_path / "sub").mkdir()
    path = _mutated(tmp_path / "sub" / "p.json", lambda d: d.update(plan_defaults={"link": "secret.json"}))
    for argv in (["compare", str(path), "rtx4090"], ["profiles", "validate", str(path)]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "plan_defaults.link" in err and "SECRET" not in err and len(err.splitlines()) == 1
    (tmp_path / "sub" / "secret.json").write_text(json.dumps({"schema": "SECRET-VALUE"}))  # beside it: read,
    assert main(["profiles", "validate", str(path)]) == 2  # and found wanting, without its content
    err = capsys.readouterr().err
    assert "not a valid gpucal link document" in err and "SECRET" not in err


def test_compare_never_prints_infinity(tmp_path, capsys):
    assert ratio(5e-324, 1e308) is None and ratio(1, 10**400) is None  # the schema refuses both; so does this
    small = _mutated(tmp_path / "small.json", lambda d: d["devices"][0]["memory_bytes"].update(value=1))
    big = _mutated(tmp_path / "big.json", lambda d: d["devices"][0]["memory_bytes"].update(value=1e15))
    assert main(["compare", str(small), str(big), "--json"]) == 0
    row = next(r for r in json.loads(capsys.readouterr().out)["rows"] if r["field"] == "memory_bytes")
    assert row["ratio"] == 1e15
