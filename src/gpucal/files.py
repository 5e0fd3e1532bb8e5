"""Writing outputs so that nothing a user had before is lost.

Every file gpucal writes (profiles, exports, plots) goes through ``write_atomic`` (text) or
``write_atomic_bytes`` / ``write_all_atomic`` (binary, several files at once): a temporary file
``.NAME.XXXXXXXX.tmp`` in the target's folder, then a link (a new file) or a rename (``force``), so that a
reader never sees half a file and a failure leaves the old file as it was.

The rules, the same for every output:

- only regular files are written, or a new name: a folder, a device node (``/dev/null``), a FIFO, a socket
  or a symbolic link to one of them is refused (``InputError``), even with ``force``;
- a symbolic link to a regular file is followed: with ``force`` the file it names is replaced (the link
  stays a link); a link to nothing is refused;
- an existing file is replaced only with ``force`` (``ProfileExistsError``), even against a writer racing
  this one (the new file is linked into place, which fails if the name exists);
- a bad path the user named (an empty name, a missing or non-folder parent, a name too long) is an
  ``InputError`` (exit 2); a failure of the machine while writing (disk full, file too large, read-only
  file system, permission denied) is a ``GpucalError`` (exit 1); either way the old file is intact and no
  temporary file is left;
- SIGINT and SIGTERM are deferred while temporary files exist (``deferred_signals``) and delivered once
  they are renamed or removed, so that an interruption never leaves one behind.

``check_output`` and ``check_output_folder`` make the same checks before any work, so that a command
refuses a bad output before it measures or draws anything.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import stat
import tempfile
import threading
from pathlib import Path

from gpucal.errors import GpucalError, InputError, ProfileError, ProfileExistsError

__all__ = ["check_output", "check_output_folder", "deferred_signals", "make_folder", "write_all_atomic", "write_atomic",
           "write_atomic_bytes"]

_DEFERRED = (signal.SIGINT, signal.SIGTERM)
# errno values that say the path the user named is wrong (exit 2); any other OSError is the machine's (exit 1)
_BAD_PATH = {errno.ENOENT: "its folder does not exist", errno.ENOTDIR: "a part of the path is not a folder",
             errno.EISDIR: "is a folder; give a file name", errno.ENAMETOOLONG: "the name is too long",
             errno.ELOOP: "too many levels of symbolic links", errno.EINVAL: "not a valid file name"}
_TMP_STEM_BYTES = 120  # bytes of the target's name kept in the temporary file's name (names are <= 255 bytes)


def _where(flag: str | None, path) -> str:
    return f"{flag}: {path}" if flag else str(path)


def _kind(mode: int) -> str:
    for test, what in ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return what
    return "not a regular file"


def _name_max(folder: Path) -> int:
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError):
        return 255


def _refuse_trailing_slash(path, flag: str | None) -> None:
    """``new/`` or ``old.json/`` names a folder: a file is never written in its place (``Path`` drops the slash)."""
    if os.fspath(path).endswith(os.sep):
        raise InputError(f"{_where(flag, os.fspath(path))}: ends in {os.sep}, so it names a folder; give a file name")


def _destination(target: Path, force: bool, flag: str | None) -> Path:
    """The file to write for ``target``: ``target`` itself, or the regular file a symbolic link names.
    Raises ``InputError`` for anything but a regular file or a new name, ``ProfileExistsError`` for an existing
    file without ``force``."""
    where = _where(flag, target)
    if not str(target) or str(target) in (".", ".."):
        raise InputError(f"{flag + ': ' if flag else ''}an empty file name; give a file name")
    try:
        link = os.lstat(target)
    except FileNotFoundError:
        return target
    except OSError as exc:
        raise _os_error(exc, target, flag, existed=False) from None
    dest = target
    if stat.S_ISLNK(link.st_mode):
        try:
            info = os.stat(target)
        except FileNotFoundError:
            raise InputError(f"{where}: a symbolic link to a missing file; remove it or name another file") from None
        except OSError as exc:
            raise _os_error(exc, target, flag, existed=False) from None
        if stat.S_ISREG(info.st_mode):
            dest = Path(os.path.realpath(target))
    else:
        info = link
    if stat.S_ISDIR(info.st_mode):
        raise InputError(f"{where}: is a folder; give a file name")
    if not stat.S_ISREG(info.st_mode):
        raise InputError(f"{where}: is {_kind(info.st_mode)}; gpucal writes only regular files")
    if not force:
        raise ProfileExistsError(f"{where}: exists; pass --force to overwrite it")
    return dest


def _existing_ancestor(path: Path, flag: str | None, shown) -> Path:
    """The nearest folder above ``path`` that exists; ``InputError`` if it is not a folder or not writable."""
    probe = Path(os.path.abspath(path)).parent
    while not probe.exists() and probe != probe.parent:
        if probe.is_symlink():
            raise InputError(f"{_where(flag, shown)}: {probe} is a symbolic link to nothing")
        probe = probe.parent
    if not probe.is_dir():
        raise InputError(f"{_where(flag, shown)}: {probe} is not a folder")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise InputError(f"{_where(flag, shown)}: cannot write in {probe} (permission denied)")
    return probe


def check_output(path: str | os.PathLike, *, force: bool, flag: str) -> Path:
    """Check before any work that ``path`` can be written as ``write_atomic`` would: a new name or (with
    ``force``) a regular file, in a folder that exists or can be created and is writable. ``InputError``
    naming ``flag`` otherwise (``ProfileExistsError`` for an existing file without ``force``)."""
    _refuse_trailing_slash(path, flag)
    target = Path(path)
    dest = _destination(target, force, flag)
    _existing_ancestor(dest, flag, path)
    if len(os.fsencode(dest.name)) > _name_max(dest.parent if dest.parent.exists() else Path(".")):
        raise InputError(f"{_where(flag, path)}: the file name is too long")
    return dest


def check_output_folder(path: str | os.PathLike, *, flag: str) -> Path:
    """Check before any work that ``path`` is a folder that exists or can be created, and is writable."""
    text = os.fspath(path)
    if not text:
        raise InputError(f"{flag}: an empty folder name; give a folder")
    folder = Path(text)
    if folder.exists():
        if not folder.is_dir():
            raise InputError(f"{flag}: {folder}: not a folder (it is a file)")
        if not os.access(folder, os.W_OK | os.X_OK):
            raise InputError(f"{flag}: {folder}: cannot write in it (permission denied)")
        return folder
    if folder.is_symlink():
        raise InputError(f"{flag}: {folder} is a symbolic link to nothing")
    _existing_ancestor(folder, flag, folder)
    return folder


def make_folder(path: str | os.PathLike, *, flag: str) -> Path:
    """Create the folder ``path`` (and its parents); ``InputError`` naming ``flag`` when it cannot be."""
    folder = check_output_folder(path, flag=flag)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{flag}: {folder} is not a folder") from None
    except OSError as exc:
        raise _os_error(exc, folder, flag, existed=False, creating=True) from None
    return folder


def _os_error(exc: OSError, path, flag: str | None, *, existed: bool, creating: bool = False) -> GpucalError:
    why = exc.strerror or str(exc)
    if exc.errno in _BAD_PATH:  # a ProfileError (an InputError): the path the user named cannot be written
        return ProfileError(_where(flag, path), None, f"cannot {'create it' if creating else 'write it'}: "
                                                      f"{_BAD_PATH[exc.errno]}")
    kept = "the file there is unchanged" if existed else "nothing was written"
    return GpucalError(f"{_where(flag, path)}: cannot {'create it' if creating else 'write it'} ({why}); {kept}")


@contextlib.contextmanager
def deferred_signals():
    """Hold SIGINT and SIGTERM for the duration of the block, then deliver them in the order they came, so that
    the block is never cut in the middle (the first delivered, KeyboardInterrupt for SIGINT, ends the caller
    as it would have). Nested blocks deliver at the outermost's end.

    Python runs signal handlers in the main thread, whichever thread the kernel hands a signal to: there the
    handlers are swapped for ones that only record the signal (masking would not do: a process-directed signal
    goes to any thread that does not mask it, such as a progress display's). In another thread nothing is
    swapped: the signal interrupts the main thread, never this block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def record(signum, frame):
        if signum not in received:
            received.append(signum)

    previous: list[tuple[int, object]] = []
    try:
        for signum in _DEFERRED:
            previous.append((signum, signal.signal(signum, record)))
        yield
    finally:
        _put_back(previous)  # every handler back, even if a signal is raised between two of them
        for signum in received:
            signal.raise_signal(signum)


def _put_back(previous: list) -> None:
    if not previous:
        return
    (signum, handler), rest = previous[0], previous[1:]
    try:
        signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    finally:
        _put_back(rest)


def _mode_for(dest: Path) -> int:
    """An existing file keeps its permissions; a new one gets those of an ordinary new file (the umask)."""
    try:
        return stat.S_IMODE(os.stat(dest).st_mode)
    except OSError:
        mask = os.umask(0)
        os.umask(mask)
        return 0o666 & ~mask


def _write_temporary(dest: Path, data: bytes) -> Path:
    stem = os.fsencode(dest.name)[:_TMP_STEM_BYTES].decode("utf-8", errors="ignore")  # a cut never splits a char
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{stem}.", suffix=".tmp")
    tmp = Path(name)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fchmod(fd, _mode_for(dest))
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    return tmp


def _commit(tmp: Path, dest: Path, shown, force: bool, flag: str | None) -> None:
    if force:
        _destination(Path(shown), True, flag)  # again, now: it may have become a device node or a folder
        os.replace(tmp, dest)
        return
    try:
        os.link(tmp, dest)
    except FileExistsError:
        raise ProfileExistsError(f"{_where(flag, shown)}: exists; pass --force to overwrite it") from None
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
            raise
        if os.path.lexists(dest):  # a file system without hard links: check, then rename
            raise ProfileExistsError(f"{_where(flag, shown)}: exists; pass --force to overwrite it") from None
        os.replace(tmp, dest)


def _sync_folder(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_all_atomic(items, *, force: bool = False, flag: str | None = None) -> list[Path]:
    """Write every ``(path, bytes)`` of ``items``, all or none: every file is checked, then every temporary
    file written, then each is put in place; a failure before that leaves every target as it was. Returns
    the paths (as given). See the module doc for the rules; ``flag`` names the CLI flag in the messages."""
    items = list(items)
    for p, _ in items:
        _refuse_trailing_slash(p, flag)
    items = [(Path(p), bytes(data)) for p, data in items]
    dests = [_destination(path, force, flag) for path, _ in items]
    done: list[Path] = []
    with deferred_signals():
        temporaries: list[Path] = []
        try:
            for (path, data), dest in zip(items, dests):
                existed = os.path.lexists(path)
                try:
                    temporaries.append(_write_temporary(dest, data))
                except OSError as exc:
                    raise _os_error(exc, path, flag, existed=existed) from None
            for (path, _), dest, tmp in zip(items, dests, temporaries):
                existed = os.path.lexists(path)
                try:
                    _commit(tmp, dest, path, force, flag)
                except OSError as exc:
                    raise _os_error(exc, path, flag, existed=existed) from None
                done.append(path)
        finally:
            for tmp in temporaries:
                with contextlib.suppress(OSError):
                    tmp.unlink()
        for folder in {dest.parent for dest in dests}:
            _sync_folder(folder)
    return done


def write_atomic_bytes(path: str | os.PathLike, data: bytes, *, force: bool = False, flag: str | None = None) -> Path:
    """Write ``data`` to ``path`` atomically (see the module doc); returns ``path`` as a ``Path``."""
    return write_all_atomic([(path, data)], force=force, flag=flag)[0]


def write_atomic(path: str | os.PathLike, text: str, *, force: bool = False, flag: str | None = None) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder, so that a reader never
    sees half a file; see the module doc for the rules.

    Without ``force`` an existing file is never replaced (``ProfileExistsError``), even by a writer
    racing this one: the new file is linked into place, which fails if the name exists.
    """
    return write_atomic_bytes(path, text.encode("utf-8"), force=force, flag=flag)
