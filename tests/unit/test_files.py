"""``gpucal.files``: every output written atomically, only to regular files or new names, with nothing left
behind by a failure or a signal, and the old file intact."""

from __future__ import annotations

import errno
import os
import signal
import socket
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from gpucal import files
from gpucal.errors import GpucalError, InputError, ProfileExistsError


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_new_file_then_an_existing_one_only_with_force(tmp_path):
    target = tmp_path / "p.json"
    assert files.write_atomic(target, "one\n") == target and target.read_text() == "one\n"
    with pytest.raises(ProfileExistsError, match=r"^-o: .*p.json: exists; pass --force"):
        files.write_atomic(target, "two\n", flag="-o")
    assert target.read_text() == "one\n"
    target.chmod(0o600)
    files.write_atomic(target, "three\n", force=True)
    assert target.read_text() == "three\n" and stat.S_IMODE(target.stat().st_mode) == 0o600  # its mode kept
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.json"]


def _not_regular(tmp_path: Path) -> dict[str, Path]:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    sock_path = tmp_path / "sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(sock_path))
    folder = tmp_path / "folder"
    folder.mkdir()
    found = {"fifo": fifo, "socket": sock_path, "folder": folder}
    device = tmp_path / "null"  # a device node of the test's own: never /dev/null, which broken code would replace
    try:
        os.mknod(device, stat.S_IFCHR | 0o666, os.makedev(1, 3))
        found["device"] = device
    except PermissionError:  # not root: the FIFO and the socket stand for every node that is not a file
        pass
    for name, to in (("to-device", found.get("device", fifo)), ("to-folder", folder), ("to-fifo", fifo)):
        found[name] = tmp_path / name
        found[name].symlink_to(to)
    return found


@pytest.mark.parametrize("force", [False, True])
def test_only_regular_files_are_ever_replaced(tmp_path, force):
    for kind, path in _not_regular(tmp_path).items():
        before = os.lstat(path)
        with pytest.raises(InputError, match=r"^-o: .*(is a folder|is a character device|is a FIFO|is a socket)"):
            files.write_atomic(path, "x", force=force, flag="-o")
        with pytest.raises(InputError):
            files.check_output(path, force=force, flag="-o")
        after = os.lstat(path)
        assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino), kind
    assert leftovers(tmp_path) == []


def test_a_link_to_a_regular_file_replaces_that_file_and_stays_a_link(tmp_path):
    real = tmp_path / "runs" / "real.json"
    real.parent.mkdir()
    real.write_text("old\n")
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    with pytest.raises(ProfileExistsError):
        files.write_atomic(link, "new\n")
    files.write_atomic(link, "new\n", force=True)
    assert link.is_symlink() and real.read_text() == "new\n"
    dangling = tmp_path / "dangling.json"
    dangling.symlink_to(tmp_path / "nowhere.json")
    with pytest.raises(InputError, match="symbolic link to a missing file"):
        files.write_atomic(dangling, "x", force=True)
    assert not (tmp_path / "nowhere.json").exists()


@pytest.mark.parametrize("name, said", [("", "an empty file name"), ("missing/p.json", "its folder does not exist"),
                                        ("blocker/p.json", "not a folder"), ("x" * 300, "too long")])
def test_a_bad_path_is_input_naming_the_flag(tmp_path, name, said):
    (tmp_path / "blocker").write_text("a file")
    path = str(tmp_path / name) if name else ""
    with pytest.raises(InputError, match=f"^--plots: .*{said}"):
        files.write_atomic(path, "x", flag="--plots")
    if name != "missing/p.json":  # check_output accepts a folder gpucal will create
        with pytest.raises(InputError, match=f"^--plots: .*{said}"):
            files.check_output(path, force=True, flag="--plots")
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EDQUOT])
def test_a_failure_while_writing_is_the_machines_and_keeps_the_old_file(tmp_path, monkeypatch, code):
    target = tmp_path / "p.json"
    target.write_text("old\n")

    def full(fd, data):
        raise OSError(code, os.strerror(code))
    monkeypatch.setattr(files.os, "write", full)
    with pytest.raises(GpucalError) as caught:
        files.write_atomic(target, "new\n", force=True, flag="-o")
    assert not isinstance(caught.value, InputError) and caught.value.exit_code == 1
    assert str(caught.value) == f"-o: {target}: cannot write it ({os.strerror(code)}); the file there is unchanged"
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []


def test_a_temporary_file_that_cannot_be_made_is_the_machines(tmp_path, monkeypatch):
    def read_only(**kwargs):
        raise OSError(errno.EROFS, "Read-only file system")
    monkeypatch.setattr(files.tempfile, "mkstemp", read_only)
    with pytest.raises(GpucalError, match="Read-only file system.*nothing was written") as caught:
        files.write_atomic(tmp_path / "new.json", "x", flag="-o")
    assert caught.value.exit_code == 1 and not (tmp_path / "new.json").exists()


def test_several_files_are_written_all_or_none(tmp_path, monkeypatch):
    first, second = tmp_path / "a.png", tmp_path / "b.png"
    first.write_bytes(b"old a")
    real_write = os.write
    calls = []

    def second_fails(fd, data):
        calls.append(fd)
        if len(calls) > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(files.os, "write", second_fails)
    with pytest.raises(GpucalError, match="No space left"):
        files.write_all_atomic([(first, b"new a"), (second, b"new b")], force=True)
    assert first.read_bytes() == b"old a" and not second.exists() and leftovers(tmp_path) == []
    monkeypatch.setattr(files.os, "write", real_write)
    assert files.write_all_atomic([(first, b"new a"), (second, b"new b")], force=True) == [first, second]
    assert first.read_bytes() == b"new a" and second.read_bytes() == b"new b"


def test_an_existing_file_is_refused_before_anything_is_written(tmp_path):
    (tmp_path / "b.png").write_bytes(b"old b")
    with pytest.raises(ProfileExistsError):
        files.write_all_atomic([(tmp_path / "a.png", b"a"), (tmp_path / "b.png", b"b")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b.png"]


def test_signals_are_held_until_the_block_ends_then_delivered():
    seen = []
    with pytest.raises(KeyboardInterrupt), files.deferred_signals():
        os.kill(os.getpid(), signal.SIGINT)
        for _ in range(1000):  # the handler would run here, were it not deferred
            pass
        seen.append("block ran to its end")
    assert seen == ["block ran to its end"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handlers are put back


def test_nested_blocks_deliver_at_the_outermost_end():
    order = []
    with pytest.raises(KeyboardInterrupt), files.deferred_signals():
        with files.deferred_signals():
            os.kill(os.getpid(), signal.SIGINT)
        order.append("after the inner block")
    assert order == ["after the inner block"]


def test_the_machines_full_disk_is_exit_1_and_keeps_the_old_file(tmp_path):
    """A real EFBIG: a process whose file size limit is below the new file (SIGXFSZ ignored)."""
    target = tmp_path / "p.json"
    target.write_text("old\n")
    code = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))
        from gpucal import files
        from gpucal.errors import GpucalError, InputError
        try:
            files.write_atomic({str(target)!r}, "x" * 100000, force=True, flag="-o")
        except GpucalError as exc:
            print(type(exc).__name__, isinstance(exc, InputError), exc)
    """)
    done = subprocess.run(check=False, args=[sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.startswith(f"GpucalError False -o: {target}: cannot write it (File too large)"), done
    assert target.read_text() == "old\n" and leftovers(tmp_path) == []


WRITER = textwrap.dedent("""
    import signal, sys
    from gpucal import files
    target, handler = sys.argv[1], sys.argv[2]
    if handler == "sigterm-raises":
        from gpucal.cli import _on_sigterm
        signal.signal(signal.SIGTERM, _on_sigterm)
    data = "x" * 200_000
    try:
        files.write_atomic(target, data, force=True)
        print("ready", flush=True)
        while True:
            files.write_atomic(target, data, force=True)
    except KeyboardInterrupt as exc:  # SIGINT, or SIGTERM as gpucal.cli raises it
        sys.exit(130 if type(exc) is KeyboardInterrupt else 143)
""")


@pytest.mark.parametrize("signum, handler, codes", [(signal.SIGINT, "default", {130}),
                                                    (signal.SIGTERM, "default", {-signal.SIGTERM}),
                                                    (signal.SIGTERM, "sigterm-raises", {143})])
def test_a_signal_in_the_write_window_leaves_no_temporary_file(tmp_path, signum, handler, codes):
    """A child writes the file over and over (almost all of its time is inside the write window); signals
    come at several moments after it says it is ready: never a ``.p.json.XXXX.tmp`` left, the file whole."""
    for delay in (0.0, 0.003, 0.01, 0.03, 0.1):
        target = tmp_path / "p.json"
        child = subprocess.Popen([sys.executable, "-c", WRITER, str(target), handler], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True)
        assert child.stdout.readline() == "ready\n"
        if delay:
            time.sleep(delay)
        child.send_signal(signum)
        _, err = child.communicate(timeout=120)
        assert child.returncode in codes, err
        assert "Traceback" not in err
        assert leftovers(tmp_path) == [] and target.read_text() == "x" * 200_000
