"""The command registry: ``gpucal --help`` lists every command without importing one, ``gpucal CMD`` imports
CMD's module alone, a name registered twice is refused, and no command imports another."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from gpucal import commands
from gpucal.cli import build_parser
from gpucal.commands import COMMANDS, CommandInfo, registry

COMMANDS_DIR = Path(commands.__file__).parent
SHARED = {"gpucal.commands", "gpucal.commands.options"}  # the registry and the shared flags


def _loaded_after(argv: list[str]) -> tuple[int, list[str], str]:
    """Run ``main(argv)`` in a fresh process: (exit code, the gpucal.commands modules it imported, stdout)."""
    code = ("import sys; from gpucal.cli import main; rc = main(%r); "
            "print(rc, sorted(m for m in sys.modules if m.startswith('gpucal.commands')), file=sys.stderr)" % argv)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    rc, _, loaded = done.stderr.strip().splitlines()[-1].partition(" ")
    return int(rc), ast.literal_eval(loaded), done.stdout


def test_help_lists_every_command_with_its_summary_and_imports_none():
    rc, loaded, out = _loaded_after(["--help"])
    assert rc == 0
    assert loaded == ["gpucal.commands"], loaded
    text = " ".join(out.split())  # argparse wraps the summaries
    for name, info in COMMANDS.items():
        assert f"{name} {info.summary}" in text, name


@pytest.mark.parametrize("argv", [
    ["plan", "--gpu", "rtx4090", "--model", "llama-3.1-8b", "--cards", "1", "--strategy", "tp", "--batch", "1"],
    ["profiles", "list"],
    ["calibrate", "--help"],
])
def test_a_command_imports_its_own_module_alone(argv):
    rc, loaded, _ = _loaded_after(argv)
    assert rc == 0
    own = COMMANDS[argv[0]].module
    others = [m for m in loaded if m not in SHARED and m != own and not m.startswith(own + ".")]
    assert others == [] and own in loaded, loaded


def test_a_mistyped_command_gets_the_closest_name():
    done = subprocess.run([sys.executable, "-m", "gpucal", "calibrat"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "did you mean calibrate?" in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_a_name_registered_twice_is_refused():
    entry = CommandInfo("gpucal.commands.plan", "plan")
    with pytest.raises(ValueError, match="'plan' is registered twice"):
        registry((("plan", entry), ("info", CommandInfo("gpucal.commands.info", "info")), ("plan", entry)))


@pytest.mark.parametrize("name", list(COMMANDS))
def test_every_command_declares_its_parser(name):
    parser = build_parser(name)
    sub = next(a for a in parser._actions if a.dest == "command")
    assert set(sub.choices) == set(COMMANDS)
    module = sys.modules[COMMANDS[name].module]
    assert module.DESCRIPTION and sub.choices[name].description == module.DESCRIPTION
    assert callable(sub.choices[name].get_default("run")) or name == "profiles"  # profiles: one run per verb


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
            names.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return names


def test_no_command_imports_another():
    """Each command, a module or a package, imports only itself, the registry and the shared options."""
    for name, info in COMMANDS.items():
        base = COMMANDS_DIR / info.module.rsplit(".", 1)[1]
        files = sorted(base.rglob("*.py")) if base.is_dir() else [base.with_suffix(".py")]
        for path in files:
            for imported in _imports(path):
                parts = imported.split(".")
                if parts[:2] != ["gpucal", "commands"] or len(parts) < 3:
                    continue
                assert parts[2] in ("options", *_command_parts()), (path.name, imported)
                assert parts[2] == "options" or ".".join(parts[:3]) == info.module, (path.name, imported)


def _command_parts() -> list[str]:
    return [info.module.split(".")[2] for info in COMMANDS.values()]


def test_the_whole_parser_parses_every_command_line():
    """``build_parser()`` (for a program that embeds gpucal's parser) has every command's flags."""
    args = build_parser().parse_args(["plan", "--gpu", "rtx4090", "--model", "seed-70b", "--cards", "2"])
    assert args.command == "plan" and args.cards == 2 and callable(args.run)
    assert build_parser().parse_args(["profiles", "show", "rtx4090"]).command == "profiles"
