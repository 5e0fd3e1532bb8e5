"""The README's examples run, and print what the README says they print."""

import re
import shlex
from pathlib import Path

import pytest

from conftest import run_gpucal

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def console_examples():
    """(command, expected output) for every ``$ gpucal ...`` line of the README's console blocks."""
    examples = []
    for block in re.findall(r"```console\n(.*?)```", README, flags=re.S):
        command, lines = None, []
        for line in block.splitlines():
            if line.startswith("$ "):
                if command:
                    examples.append((command, "\n".join(lines)))
                command, lines = line[2:], []
            else:
                lines.append(line.rstrip())
        if command:
            examples.append((command, "\n".join(lines)))
    return examples


EXAMPLES = console_examples()


def test_the_readme_has_examples():
    assert len(EXAMPLES) >= 6


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    """One folder for every example, in which the README's calibrations have run first (later examples plan
    from the profiles they wrote): command -> its completed process."""
    folder = tmp_path_factory.mktemp("readme")
    ran = {}
    for command, _ in EXAMPLES:
        argv = shlex.split(command)
        if argv[1] == "calibrate":
            ran[command] = run_gpucal(*argv[1:], cwd=folder)
    return folder, ran


@pytest.mark.parametrize("command, expected", EXAMPLES, ids=[c for c, _ in EXAMPLES])
def test_readme_example(command, expected, workdir):
    folder, ran = workdir
    argv = shlex.split(command)
    assert argv[0] == "gpucal"
    out = ran.get(command) or run_gpucal(*argv[1:], cwd=folder)
    assert out.returncode == 0, out.stderr
    got = "\n".join(line.rstrip() for line in out.stdout.rstrip("\n").splitlines())
    assert got == expected


def setup_commands():
    section = README.split("## Set up", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, flags=re.S).group(1)
    return [line for line in block.splitlines() if line.strip()]


def test_the_setup_is_two_commands_and_ci_runs_the_second():
    install, test = setup_commands()
    assert 'pip install ".[test]"' in install
    ci = (ROOT / ".ci" / "run").read_text()
    assert test in ci.splitlines()  # CI runs the README's test command, as written


def test_the_main_job_of_the_setup_is_examples_with_their_output():
    install, _ = setup_commands()
    main_job = install.split('pip install ".[test]" && ', 1)[1].split(" && ")
    assert [c.split()[1] for c in main_job] == ["calibrate", "plan"]  # calibrate, then plan from its profile
    for command in main_job:
        assert command in [c for c, _ in EXAMPLES]
