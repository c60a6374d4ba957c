"""README.md as a new user reads it: its commands run, in order, and print what it shows.

Every ```console block of README.md is run, in a scratch directory that holds the repository's
`assets/`, one `$ ` command at a time (a line ending in `\\` continues it) through `bash`, with
`fastsft` and `python` meaning this interpreter and this fastsft. Each command must exit 0 and print
on stdout the lines the README shows after it; a last shown line `...` means the output goes on,
and the lines shown must begin it. Timing lines (`records/s`) are compared with their numbers masked.

Also checked here, because they are what a newcomer meets first: the commands of "Looking at the
data" right after `make demo` alone (numpy and fastsft; no tokenizers, transformers, matplotlib,
torch), the Makefile's demo against the README's, the prep option table against `fastsft prep
--help`, and the extras named in README, `fastsft.extras` and pyproject.toml against each other.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from fastsft.cli import build_parser
from fastsft.extras import EXTRAS, INSTALL

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SETUP, LOOKING = "Set-up", "Looking at the data"
# What `pip install .` does not bring (fastsft.extras.EXTRAS, all of them): blocked to act out a
# machine where only `make demo` ran.
OPTIONAL_MODULES = sorted({m for modules in EXTRAS.values() for m in modules})


@dataclass
class Command:
    section: str
    text: str
    expected: list[str]
    prefix: bool
    """The README shows only the start of the output (its last shown line is `...`)."""

    @property
    def extra(self) -> str | None:
        """The extra this command needs, as README's table of extras says."""
        if re.match(r"fastsft verify\b", self.text):
            return "verify"
        if re.match(r"fastsft stats\b.*--plot", self.text):
            return "plot"
        return None


def readme_commands(text: str) -> list[Command]:
    """The `$ ` commands of every ```console block, with the section (## heading) they are in."""
    commands: list[Command] = []
    section, in_block, continued = "", False, False
    for line in text.splitlines():
        if not in_block and line.startswith("## "):
            section = line[3:].strip()
        elif line.startswith("```"):
            in_block = line == "```console" if not in_block else False
        elif in_block and line.startswith("$ "):
            commands.append(Command(section, line[2:], [], False))
            continued = line.endswith("\\")
        elif in_block and continued:
            commands[-1].text += "\n" + line
            continued = line.endswith("\\")
        elif in_block and line == "...":
            commands[-1].prefix = True
        elif in_block:
            commands[-1].expected.append(line)
    return commands


COMMANDS = readme_commands(README.read_text(encoding="utf-8"))


def _normalized(lines: list[str]) -> list[str]:
    """Trailing blanks dropped; the numbers (and thread count) of a timing line masked."""

    def timing(x: str) -> str:
        return " ".join(re.sub(r"\d[\d,.]*", "#", x).replace(" thread,", " threads,").split())

    return [timing(x.rstrip()) if "records/s" in x else x.rstrip() for x in lines]


def check_output(command: Command, stdout: str) -> None:
    got, want = _normalized(stdout.splitlines()), _normalized(command.expected)
    if command.prefix:
        got = got[: len(want)]
    assert got == want, f"`{command.text}` printed other lines than README shows"


@dataclass
class Scratch:
    dir: Path
    bin_full: Path
    """`fastsft` and `python` as installed by `make test`."""
    bin_bare: Path
    """`fastsft` and `python` with the optional modules blocked: as after `make demo` alone."""

    def run(self, command: Command, bare: bool = False) -> subprocess.CompletedProcess:
        bin_dir = self.bin_bare if bare else self.bin_full
        env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}"}
        env.pop("NO_COLOR", None)
        return subprocess.run(["bash", "-c", command.text], cwd=self.dir, env=env, capture_output=True, text=True, timeout=300)


def _shims(bin_dir: Path, blocked: list[str]) -> Path:
    """`python` (this interpreter) and `fastsft` (this fastsft, with the modules ``blocked``)."""
    bin_dir.mkdir()
    python, fastsft = bin_dir / "python", bin_dir / "fastsft"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    fastsft.write_text(
        f"#!{sys.executable}\nimport sys\n"
        f"for name in {blocked!r}:\n    sys.modules[name] = None  # its import fails, as if not installed\n"
        "from fastsft.cli import main\nsys.exit(main())\n"
    )
    for f in (python, fastsft):
        f.chmod(0o755)
    return bin_dir


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Scratch:
    d = tmp_path_factory.mktemp("readme")
    (d / "work").mkdir()
    (d / "work" / "assets").symlink_to(ROOT / "assets")
    return Scratch(d / "work", _shims(d / "bin", []), _shims(d / "bare-bin", OPTIONAL_MODULES))


@pytest.fixture(scope="module")
def demo(scratch) -> Scratch:
    """The set-up commands (`make demo` after `pip install .`), each checked as it runs."""
    commands = [c for c in COMMANDS if c.section == SETUP]
    assert [c.text.split()[0] for c in commands] == ["fastsft", "python"], "README's set-up lost its demo commands"
    for command in commands:
        done = scratch.run(command)
        assert done.returncode == 0, f"`{command.text}` exited {done.returncode}: {done.stderr}"
        check_output(command, done.stdout)
    return scratch


def _extra_installed(extra: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in EXTRAS[extra])


def test_setup_commands_print_what_readme_shows(demo):
    assert (demo.dir / "out" / "demo" / "manifest.json").is_file()


def test_looking_at_the_data_commands_print_what_readme_shows(demo):
    commands = [c for c in COMMANDS if c.section == LOOKING]
    assert len(commands) >= 5 and {c.extra for c in commands} == {None, "plot", "verify"}
    for command in commands:
        done = demo.run(command)
        if command.extra and not _extra_installed(command.extra):  # still checked: the one-line error
            assert done.returncode == 2 and f"pip install 'fastsft[{command.extra}]'" in done.stderr, done.stderr
            continue
        assert done.returncode == 0, f"`{command.text}` exited {done.returncode}: {done.stderr}"
        check_output(command, done.stdout)
    assert (demo.dir / "sample.html").read_text(encoding="utf-8").startswith("<!DOCTYPE html>")


def test_after_make_demo_alone_each_command_works_or_names_its_extra(demo):
    """With only numpy and fastsft: inspect decodes through the extension; --plot and verify stop
    at once with one line naming the extra, and write nothing."""
    (demo.dir / "lengths.png").unlink(missing_ok=True)
    for command in [c for c in COMMANDS if c.section == LOOKING]:
        done = demo.run(command, bare=True)
        if command.extra is None:
            assert done.returncode == 0, f"`{command.text}` exited {done.returncode}: {done.stderr}"
            check_output(command, done.stdout)
            continue
        name = command.text.split()[1]
        needed_by = "--plot" if command.extra == "plot" else name
        missing = ", ".join(EXTRAS[command.extra])
        assert (done.returncode, done.stdout) == (2, ""), command.text
        assert done.stderr == (
            f"fastsft {name}: error: {needed_by} needs {missing} (not installed): pip install 'fastsft[{command.extra}]'\n"
        )
    assert not (demo.dir / "lengths.png").exists()
    # A command whose import fails deep inside (torch in tiny-model) says the same in one line.
    done = demo.run(Command("", "fastsft tiny-model --tokenizer assets/tokenizers/qwen2.5 -o tiny/", [], False), bare=True)
    assert (done.returncode, done.stderr) == (
        2, f"fastsft tiny-model: error: tiny-model needs torch (not installed): {INSTALL['train']}\n"
    )  # fmt: skip


def test_makefile_demo_is_the_readme_demo():
    """`make demo` runs what README says it runs (and so prints what README shows)."""
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "no demo target in the Makefile"
    made = [
        " ".join(line.split()).replace("$(DEMO_OUT)", "out/demo").replace("$(PYTHON)", "python")
        for line in recipe.group(1).replace("\\\n", " ").splitlines()
    ]
    shown = [" ".join(c.text.replace("\\\n", " ").split()) for c in COMMANDS if c.section == SETUP]
    assert made == shown
    assert re.search(r"^DEMO_OUT \?= out/demo$", makefile, re.MULTILINE)


def _prep_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["prep"]


def test_prep_option_table_is_the_help():
    """README's `fastsft prep` table lists every option of `fastsft prep --help`, in its order, with
    the same spelling and the same text: a new option, or changed help, must update README."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## `fastsft prep`") :]
    table = section[section.index("| option | meaning |") :].split("\n\n")[0].splitlines()[2:]
    rows = [[cell.strip().replace("\\|", "|") for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in table]
    formatter = argparse.HelpFormatter("fastsft prep")
    expected = [
        [f"`{formatter._format_action_invocation(a)}`", a.help]
        for a in _prep_parser()._actions
        if not isinstance(a, argparse._HelpAction)
    ]
    assert rows == expected


def test_extras_agree_with_pyproject_and_readme():
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    readme = README.read_text(encoding="utf-8")
    for extra, modules in EXTRAS.items():
        names = {re.split(r"[<>=\[ ]", req)[0].lower().replace("-", "_") for req in declared[extra]}
        assert set(modules) <= names, (extra, modules, declared[extra])
        assert f"'fastsft[{extra}]'" in readme, f"README does not say what needs fastsft[{extra}]"


def test_layout_names_every_module():
    """README's Layout section lists every source file of the Rust core and the Python package."""
    layout = README.read_text(encoding="utf-8").split("## Layout", 1)[1].split("\n## ", 1)[0]
    sources = [*ROOT.glob("rust/**/*.rs"), *ROOT.glob("python/fastsft/**/*.py")]
    missing = sorted(str(p.relative_to(ROOT)) for p in sources if p.name != "__init__.py" and p.stem not in layout)
    assert not missing, f"README's Layout section does not name: {missing}"
