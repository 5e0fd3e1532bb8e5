"""The ``gpucal`` command: argument parsing, dispatch and exit codes.

Exit codes: 0 done; 1 a measurement or device failed, or the machine failed gpucal (a file or the output
could not be written, memory ran out); 2 bad input, reported as one line on stderr that names the flag,
file or field (never a traceback); 130 Ctrl-C (SIGINT) and 143 SIGTERM, each one line (``gpucal CMD:
interrupted`` / ``terminated``) after the cleanup ran. Each command lives in ``gpucal.commands``, whose
registry names them; this module only wires them together.

``gpucal --help`` lists every command from the registry without importing one; ``gpucal CMD ...`` imports
only CMD's module (``gpucal.commands.load``), inside ``main``'s handler, so that a Ctrl-C while it imports
ends in that one line (``gpucal.__main__``, the console script's entry, does the same for this module).
Under ``mpiexec`` every rank fails alike: only rank 0 prints an error (argparse's too). A warning (numpy's
RuntimeWarning, say) is printed as one line ``gpucal CMD: warning: ...``, never with a file path.
"""

from __future__ import annotations

import argparse
import difflib
import errno
import os
import re
import signal
import sys
import threading
import warnings

from gpucal import __version__
from gpucal.commands import COMMANDS, load
from gpucal.errors import GpucalError
from gpucal.profiles.names import ambiguity_note
from gpucal.render import escape

__all__ = ["ArgumentParser", "Terminated", "build_parser", "main"]

# the environment variables MPI launchers set to each process's rank (MPICH/Hydra, Open MPI, PMIx, MVAPICH)
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "MV2_COMM_WORLD_RANK")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is (as Ctrl-C raises KeyboardInterrupt), so that the same cleanup
    runs; ``main`` ends it with ``terminated`` and exit code 143."""

    signum = 15


# the signals received while main runs: an exception raised where Python cannot pass it on (a weakref or GC
# callback) is swallowed, so main also looks here once the command returns
_RECEIVED: list[int] = []


def _on_sigterm(signum, frame):
    _RECEIVED.append(signum)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM ends a process stuck in a C call at once
    raise Terminated()


def _on_sigint(signum, frame):
    _RECEIVED.append(signum)
    raise KeyboardInterrupt()


def _unraisable(hook):
    """``sys.unraisablehook`` that keeps quiet about an interruption swallowed in a callback (``_RECEIVED`` has
    it) and leaves everything else to ``hook``."""

    def quiet(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt):
            return
        hook(unraisable)

    return quiet


def _mpi_rank() -> int | None:
    """This process's MPI rank: gpucal's own once MPI started, else the launcher's environment, else None."""
    comm = sys.modules.get("gpucal.kernels.comm")
    rank = comm.current_rank() if comm is not None else None
    if rank is not None:
        return rank
    for name in RANK_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isascii() and value.isdigit():
            return int(value)
    return None


def _speaks() -> bool:
    """Whether this process reports errors: always, except on MPI ranks other than 0."""
    return _mpi_rank() in (None, 0)


def _say(text: str) -> None:
    """One line on stderr, its control characters escaped (the text may quote a file)."""
    sys.stderr.write(_escaped(text) + "\n")
    sys.stderr.flush()


class ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad input as one line (``PROG: error: ...``) and exit code 2, names a
    mistyped flag or choice with the closest match, and under MPI prints on rank 0 only."""

    def parse_known_args(self, args=None, namespace=None):
        self._argv = list(sys.argv[1:] if args is None else args)
        return super().parse_known_args(args, namespace)

    def parse_args(self, args=None, namespace=None):
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            owner = self._subparser(command) or self
            argv = getattr(self, "_argv", [])
            if command in argv and extras[0] in argv[:argv.index(command)]:
                owner = self  # a flag before the command: this parser's
            owner.error(owner._unrecognized(extras, also=self))
        return parsed

    def _subparser(self, name):
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction) and name in action.choices:
                return action.choices[name]
        return None

    def _flags(self) -> list[str]:
        return [s for a in self._actions for s in a.option_strings]

    def _suggest(self, word: str, choices) -> str:
        close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
        return f"; did you mean {close[0]}?" if close else ""

    def _unrecognized(self, extras: list[str], also=None) -> str:
        word = extras[0]
        if word.startswith("-") and len(word) > 1:
            flag = word.split("=", 1)[0]
            flags = self._flags() + (also._flags() if also is not None and also is not self else [])
            text = f"unrecognized option {flag}{self._suggest(flag, flags)}"
        else:
            text = f"unrecognized argument {word!r}"
        return text

    def _unknown_option(self) -> str | None:
        """The first option on the command line this parser does not know (before its subcommand, if it
        has one), or None: argparse reports a missing argument first, which hides the mistyped flag."""
        flags = self._flags()
        commands = set()
        for action in self._actions:
            if isinstance(action, argparse._SubParsersAction):
                commands = set(action.choices)
        for word in getattr(self, "_argv", []):
            if word == "--" or word in commands:
                return None
            if not word.startswith("-") or len(word) < 2 or re.fullmatch(r"-\d.*|-\.\d.*", word):
                continue
            flag = word.split("=", 1)[0]
            if not any(f == flag or (flag.startswith("--") and f.startswith(flag))
                       or (not flag.startswith("--") and len(f) == 2 and flag.startswith(f)) for f in flags):
                return flag
        return None

    def error(self, message: str):
        unknown = self._unknown_option() if message.startswith("the following arguments are required") \
            else None
        if unknown is not None:
            message = f"unrecognized option {unknown}{self._suggest(unknown, self._flags())}"
        choice = re.match(r"argument (.*): invalid choice: '(.*)' \(choose from (.*)\)$", message)
        if choice:
            offered = re.findall(r"'([^']*)'", choice.group(3))
            message += self._suggest(choice.group(2), offered)
        if not _speaks():
            self.exit(2)
        self.exit(2, _escaped(f"{self.prog}: error: {message} (see {self.prog} --help)") + "\n")


_TOKEN_MAX_CHARS = 160  # a word of a message longer than this (a value the user gave, echoed) is cut


def _escaped(text: str) -> str:
    """``text`` as one line: its control characters escaped, and every word longer than ``_TOKEN_MAX_CHARS``
    (a 100,000-character value echoed back) cut to its start and its length."""
    return re.sub(r"\S{%d,}" % (_TOKEN_MAX_CHARS + 1), lambda m: f"{m.group()[:60]}...({len(m.group()):,} characters)",
                  escape(text, layout=False))


def build_parser(command: str | None = None, *, lazy: bool = False) -> ArgumentParser:
    """The ``gpucal`` parser: every command of the registry with its summary and its flags (each command's
    module imported now). ``lazy`` (what ``main`` does): the flags of ``command`` alone, the others named but not
    loaded."""
    parser = ArgumentParser(
        prog="gpucal",
        description="Measure what a GPU machine really delivers, and plan LLM inference from it.",
    )
    parser.add_argument("--version", action="version", version=f"gpucal {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=ArgumentParser)
    sub.required = True
    for name, info in COMMANDS.items():
        if name == command or not lazy:
            module = load(name)
            module.add_arguments(sub.add_parser(name, help=info.summary, description=module.DESCRIPTION))
        else:
            sub.add_parser(name, help=info.summary, add_help=False)
    return parser


def _guess_command(argv: list[str]) -> str | None:
    """The command of a command line not parsed yet: its first word that is not a flag (``gpucal`` itself
    takes no value after a flag), where that is a command; else None."""
    for word in argv:
        if word == "--":
            continue
        if not word.startswith("-"):
            return word if word in COMMANDS else None
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None):
    """A warning as one line naming the command, never a file path (numpy's RuntimeWarning, say)."""
    if _speaks():
        _say(f"gpucal: warning: {category.__name__}: {message}")


def main(argv: list[str] | None = None) -> int:
    """Run ``gpucal`` with ``argv`` (default: the process's arguments); return the exit code."""
    state = {"command": None, "previous": None}
    try:
        return _main(argv, state)
    except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM anywhere, even while importing or parsing
        return _interrupted(exc, state)
    finally:
        _restore(state)


def _restore(state: dict) -> None:
    if state.get("previous") is not None:
        signal.signal(signal.SIGTERM, state["previous"])
        state["previous"] = None
        if state.get("previous_int") is not None:
            signal.signal(signal.SIGINT, state.pop("previous_int"))
    if state.get("unraisable") is not None:
        sys.unraisablehook = state.pop("unraisable")
    if state.get("warnings") is not None:
        warnings.showwarning = state.pop("warnings")


def _interrupted(exc: BaseException, state: dict) -> int:
    terminated = isinstance(exc, Terminated)
    command = state["command"] or _guess_command(list(sys.argv[1:] if state.get("argv") is None else state["argv"]))
    detail = getattr(exc, "detail", None)
    if _speaks():
        _say(f"gpucal{' ' + command if command else ''}: {'terminated' if terminated else 'interrupted'}"
             + (f" {detail}" if detail else ""))
    return 143 if terminated else 130


# flags and arguments that name a document by a bare name: (dest, kind, how the name is found in the value)
_DOCUMENT_ARGS = (
    ("gpu", "profile", lambda v: v),
    ("link", "link", lambda v: v),
    ("net", "link", lambda v: v),
    ("model", "model", lambda v: v),
    ("profile", "profile", lambda v: v),  # gpucal plot PROFILE
    ("backend", "profile", lambda v: v.split("+")[0].split(":")[1] if v.startswith("virtual:") else ""),
    ("simulate", "profile", lambda v: v.split("+")[0].split(":")[0]),
)


def _stdout_broken(exc: OSError) -> bool:
    """Whether ``exc`` (no file named) is the output stream's failure: an error of writing, or stdout will not
    flush. (A failed write may already have dropped its buffer, so the flush alone does not tell.)"""
    if exc.errno in (errno.ENOSPC, errno.EIO, errno.EFBIG, errno.EDQUOT, errno.EBADF, errno.EPIPE):
        return True
    try:
        sys.stdout.flush()
    except OSError:
        return True
    return False


def _usable_streams() -> None:
    """stdout and stderr that can take any text: a closed one (``>&-``) goes to /dev/null, and characters the
    terminal's encoding lacks (an ASCII locale) are written as escapes (``\\xb5``), not a UnicodeEncodeError."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if stream is None:
            setattr(sys, name, open(os.devnull, "w", encoding="utf-8"))  # noqa: SIM115 - lives as long as the process
        elif hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="backslashreplace")
            except (OSError, ValueError):
                pass


def _ambiguity_notes(args) -> None:
    """Where a bare name given for a document is a built-in and also a file in the current folder, say once
    that the built-in was taken (``gpucal.profiles.names.ambiguity_note``)."""
    values = [(dest, kind, pick(v)) for dest, kind, pick in _DOCUMENT_ARGS
              if isinstance(v := getattr(args, dest, None), str) and v]
    values = [(dest, kind, name) for dest, kind, name in values if name and os.path.lexists(name)]
    if not values or not _speaks():
        return
    for _, kind, name in values:
        note = ambiguity_note(name, kind)
        if note:
            _say(f"gpucal {args.command}: note: {note}")


def _main(argv: list[str] | None, state: dict) -> int:
    state["argv"] = argv
    _usable_streams()
    _RECEIVED.clear()
    if threading.current_thread() is threading.main_thread():
        state["previous"] = signal.signal(signal.SIGTERM, _on_sigterm)
        state["previous_int"] = signal.signal(signal.SIGINT, _on_sigint)
    state["unraisable"] = sys.unraisablehook
    sys.unraisablehook = _unraisable(sys.unraisablehook)
    state["warnings"] = warnings.showwarning
    warnings.showwarning = _show_warning
    words = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(_guess_command(words), lazy=True)  # imports that command's module alone
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse: bad flags (its one line is out), --help, --version
        return exc.code if isinstance(exc.code, int) else 2
    state["command"] = args.command
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # the command line, for provenance
    try:
        _ambiguity_notes(args)
        code = int(args.run(args) or 0)
        if _RECEIVED:  # a signal came and its exception was swallowed: the work is done, but it was asked to stop
            stop = Terminated() if _RECEIVED[0] == signal.SIGTERM else KeyboardInterrupt()
            stop.detail = "after it had done its work (every output is complete)"
            raise stop
        return code
    except GpucalError as exc:
        code, text = exc.exit_code, str(exc)
        if code == 130 and isinstance(exc.__cause__, Terminated):  # a step cut by SIGTERM, not by Ctrl-C
            code, text = 143, text.replace("(interrupted)", "(terminated)", 1)
        if _speaks():  # under mpiexec every rank fails alike: rank 0 says it once
            _say(f"gpucal {args.command}: error: {text}")
        return code
    except BrokenPipeError:  # the reader went away, e.g. `gpucal profiles list | head -1`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except MemoryError:
        if _speaks():
            _say(f"gpucal {args.command}: error: out of memory (this process's limit or the machine's); "
                 "give smaller sizes")
        return 1
    except OSError as exc:  # files are written through gpucal.files, which names them: this is a stream, or a library's
        if _speaks():
            if exc.filename is not None:  # e.g. a cache folder a library could not make (CUPY_CACHE_DIR)
                _say(f"gpucal {args.command}: error: {exc.filename}: {exc.strerror or exc}")
            elif _stdout_broken(exc):
                _say(f"gpucal {args.command}: error: cannot write the output ({exc.strerror or exc})")
            else:
                _say(f"gpucal {args.command}: error: {type(exc).__name__}: {exc.strerror or exc}")
        return 1
    except KeyboardInterrupt:
        raise
    except Exception as exc:  # a bug in gpucal: one line, and the traceback only when asked for
        if os.environ.get("GPUCAL_DEBUG"):
            raise
        if _speaks():
            _say(f"gpucal {args.command}: internal error (please report it; GPUCAL_DEBUG=1 shows the traceback): "
                 f"{type(exc).__name__}: {exc}")
        return 1
