"""The repository's folders say what a file is: `Testing/` holds the tests and their helpers, `tools/` the
benchmark, evaluation and picture scripts; every script a document, model card, recipe or docstring tells a
reader to run exists where it says."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT_MENTION = re.compile(r"\b((?:Testing|tools)/[\w.-]+\.(?:py|md))")


def documents() -> list[Path]:
    """README, docs, Makefile, model cards, training recipes and the package's code: where readers find commands."""
    extension = ROOT / "SpineSegExtension"
    found = [ROOT / "README.md", ROOT / "Makefile", *sorted((ROOT / "docs").glob("*.md"))]
    found += sorted((extension / "spineseg" / "models").glob("*.md"))
    found += sorted((extension / "spineseg" / "models").glob("*.json"))
    found += sorted((extension / "Resources" / "Training").glob("*"))
    found += sorted(extension.rglob("*.py")) + sorted((ROOT / "tools").glob("*.py"))
    return [path for path in found if path.is_file()]


def test_testing_holds_only_tests_and_their_helpers():
    files = sorted(p.name for p in (ROOT / "Testing").iterdir() if p.is_file())
    others = [name for name in files if not (name.startswith("test_") and name.endswith(".py")) and name != "conftest.py"]
    assert not others, f"not tests: {others}; scripts belong in tools/, records in docs/"


def test_the_scripts_live_in_tools():
    scripts = {p.name for p in (ROOT / "tools").glob("*.py")}
    assert {"benchmark.py", "benchmark_real_ct.py", "evaluate_discs.py", "evaluate_vertebrae.py",
            "make_pictures.py", "stage_meter.py"} <= scripts
    assert "tools/benchmark.py" in (ROOT / "Makefile").read_text()


def test_every_script_a_reader_is_told_to_run_exists():
    missing = []
    for path in documents():
        for mention in SCRIPT_MENTION.findall(path.read_text(errors="replace")):
            if not (ROOT / mention).is_file():
                missing.append(f"{path.relative_to(ROOT)}: {mention}")
    assert not missing, "mentions of files that are not there:\n" + "\n".join(missing)
