"""The README is a user's page: what, picture, install and quick start first; every quick-start command exists
as written (options and subcommands in the parsers), and the cheap ones run from a fresh checkout's point of view."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from spineseg.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXTENSION = ROOT / "SpineSegExtension"


def section(title: str) -> str:
    return re.search(rf"\n## {re.escape(title)}\n(.*?)(?=\n## |\Z)", README, re.S).group(1)


def commands(text: str) -> list[list[str]]:
    """The command lines in the code blocks of ``text`` (comments dropped)."""
    lines = []
    for block in re.findall(r"```\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line:
                lines.append(shlex.split(line))
    return lines


def test_the_first_screen_is_for_users():
    headings = re.findall(r"^## (.+)$", README, re.M)
    assert headings[:2] == ["Install", "Quick start"]
    first = README.split("\n## ")[0]
    assert "vertebra" in first and "disc" in first and "![" in first
    picture = re.search(r"!\[[^\]]*\]\(([^)]+)\)", first).group(1)
    assert (ROOT / picture).is_file()
    assert len(README.splitlines()) < 200  # the development record lives in docs/development.md
    assert (ROOT / "docs" / "development.md").is_file()
    assert not (ROOT / "docs" / "slicer.md").read_text().splitlines()[2].startswith("What the README")
    for title in ("What to expect on real scans", "How it compares", "The two commands", "Bundled models"):
        assert title in headings
    assert "TotalSegmentator" in section("How it compares") and "TotalSpineSeg" in section("How it compares")
    assert ["make", "demo"] in commands(section("The two commands"))
    assert ["make", "test"] in commands(section("The two commands"))


def test_every_link_to_a_file_points_at_one():
    for path in (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))):
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if target.startswith(("http://", "https://", "#")):
                continue
            assert (path.parent / target.split("#")[0]).exists(), f"{path.name}: {target}"


def parses(argv: list[str], parser) -> None:
    try:
        parser.parse_args(argv)
    except SystemExit as stop:
        raise AssertionError(f"{argv} does not parse") from stop


def test_every_quick_start_command_names_options_and_subcommands_that_exist():
    sys.path.insert(0, str(EXTENSION))  # SpineSegLib sits beside the core, as in Slicer
    from SpineSegLib.batch import parse_arguments

    seen = set()
    for command in commands(section("Quick start")) + commands(section("Install")):
        if command[0] == "spineseg":
            parses(command[1:], build_parser())
        elif command[:3] == ["Slicer", "--no-main-window", "--python-script"]:
            assert (ROOT / command[3]).is_file()
            parse_arguments(command[4:])
        elif command[0] == "python":
            assert (ROOT / command[1]).is_file()
            parse_arguments(command[2:])
        elif command[:2] == ["pip", "install"]:
            assert command[2] == "." and (ROOT / "pyproject.toml").is_file()
        else:
            raise AssertionError(f"the test does not know how to check {command}")
        seen.add(command[0] if command[0] != "spineseg" else f"spineseg {command[1]}")
    assert {"spineseg vertebrae", "spineseg discs", "spineseg models", "spineseg train", "Slicer", "python",
            "pip"} <= seen


def test_the_quick_start_runs_as_written_where_it_needs_no_data_of_your_own(tmp_path):
    """The phantom and vertebra lines and `spineseg models`, in a fresh folder, as a user types them."""
    environment = {**os.environ, "PYTHONPATH": str(EXTENSION), "OMP_NUM_THREADS": "1"}
    ran = []
    for command in commands(section("Quick start")):
        if command[0] != "spineseg" or command[1] not in {"phantom", "vertebrae", "models"}:
            continue
        result = subprocess.run([sys.executable, "-m", "spineseg.entry", *command[1:]], cwd=tmp_path,
                                env=environment, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, (command, result.stderr)
        ran.append(command[1])
    assert ran == ["phantom", "vertebrae", "models"]
    assert (tmp_path / "try" / "vertebrae" / "vertebrae.json").is_file()
