"""Writing outputs so that nothing a user had before is lost.

Every file gpucal writes (profiles, exports, plots) goes through ``write_atomic``: a temporary file in the
target's folder, then a rename, so that a reader never sees half a file and a failure leaves the old file
as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from gpucal.errors import ProfileError, ProfileExistsError

__all__ = ["write_atomic"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_atomic(path: str | os.PathLike, text: str, *, force: bool = False) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same folder, so that a reader never sees
    half a file.

    Without ``force`` an existing file is never replaced (``ProfileExistsError``), even by a writer
    racing this one: the new file is linked into place, which fails if the name exists.
    """
    target = Path(path)
    directory = target.parent if str(target.parent) else Path(".")
    if not force and target.exists():
        raise ProfileExistsError(f"{target}: exists; pass --force to overwrite it")
    try:
        handle = tempfile.NamedTemporaryFile(
            "w", encoding="utf-8", dir=directory, prefix=f".{target.name}.", suffix=".tmp", delete=False
        )
    except OSError as exc:
        raise ProfileError(str(target), None, f"cannot write: {exc.strerror or exc}") from None
    tmp = Path(handle.name)
    try:
        with handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as an ordinary file would be (temporary files are private)
        if force:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)
            except FileExistsError:
                raise ProfileExistsError(f"{target}: exists; pass --force to overwrite it") from None
            except OSError:  # a filesystem without hard links: check, then rename
                if target.exists():
                    raise ProfileExistsError(f"{target}: exists; pass --force to overwrite it") from None
                os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
