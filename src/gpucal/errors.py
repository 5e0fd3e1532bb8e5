"""The errors gpucal raises on purpose, and the exit code each one maps to.

Library code raises these and never exits; only the CLI turns them into an exit code and one line on
stderr. ``InputError`` is bad input (exit 2): its message names the flag, file or field at fault.
"""

from __future__ import annotations


class GpucalError(Exception):
    """A failure gpucal reports as such (exit code 1): a measurement failed, a device errored."""

    exit_code = 1


class InputError(GpucalError, ValueError):
    """Bad input (exit code 2). The message names the flag, file or field at fault."""

    exit_code = 2


class ProfileError(InputError):
    """A profile, link or model file that cannot be read or does not validate.

    ``path`` is the file (or the preset's name) and ``field`` the dotted path of the offending field
    (``None`` when the document as a whole is at fault, e.g. it is not JSON).
    """

    def __init__(self, path: str, field: str | None, message: str):
        self.path = path
        self.field = field
        self.detail = message
        where = f"{path}: {field}" if field else str(path)
        super().__init__(f"{where}: {message}")


class ProfileExistsError(InputError):
    """Refusing to overwrite an existing file without ``force``."""
