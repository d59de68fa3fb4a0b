"""What the command line tells a person: progress they can read, warnings on lines of their own, and a closing
summary read from the files the run wrote (levels, naming, warnings, the model card's caveat, where the files are)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from spineseg.io import write_volume
from spineseg.model_store import find_model, read_card
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.phantoms.mri import make_mri_phantom
from spineseg.progress import TextProgress

from conftest import require_real_data

STAMP = re.compile(r"^\d\d:\d\d:\d\d ")


def run_to_log(tmp_path: Path, *arguments: str) -> tuple[str, str]:
    """Run ``spineseg ARGUMENTS`` with stderr sent to a log file, as a batch job would; returns (log, stdout)."""
    log = tmp_path / "run.log"
    with open(log, "w") as stderr:
        result = subprocess.run([sys.executable, "-m", "spineseg.entry", *arguments], stdout=subprocess.PIPE,
                                stderr=stderr, text=True, timeout=600)
    assert result.returncode == 0, log.read_text()
    return log.read_text(), result.stdout


def summary_of(log: str) -> dict[str, list[str]]:
    """The closing summary's lines by their first word (found, naming, warning(s), model, files)."""
    lines: dict[str, list[str]] = {}
    for line in log.splitlines():
        key, _, rest = line[9:].partition(": ")
        lines.setdefault(key.split()[0], []).append(rest)
    return lines


def test_a_vertebra_run_logged_to_a_file_is_plain_timestamped_lines_and_ends_with_what_it_found(tmp_path):
    phantom = make_ct_phantom(levels=[17, 18, 19, 20, 21, 22], spacing=(1.5, 1.5, 1.5), seed=1000)
    write_volume(phantom.image, tmp_path / "ct.nrrd")
    log, stdout = run_to_log(tmp_path, "vertebrae", str(tmp_path / "ct.nrrd"), "-o", str(tmp_path / "out"))

    assert "\r" not in log and "‰" not in log
    assert all(STAMP.match(line) for line in log.splitlines()), log
    assert len(log.splitlines()) == len(set(log.splitlines()))  # no line written twice
    assert "found vertebra 6" in log  # progress counts vertebrae
    record = json.loads((tmp_path / "out" / "vertebrae.json").read_text())
    summary = summary_of(log)
    assert summary["found"] == ["6 vertebrae (T10-L3)"]
    assert [item["name"] for item in record["vertebrae"]] == ["T10", "T11", "T12", "L1", "L2", "L3"]
    assert summary["naming"] == ["named by the last rib (on T12)"] and record["naming"]["anchor"] == "last rib"
    assert summary["warnings"] == ["none"] and record["warnings"] == []
    caveat = read_card(find_model("vertebrae-ct-synth-v7", "vertebrae")).caveat
    assert summary["model"] == [caveat]
    assert f"in {tmp_path / 'out'}" in summary["files"][0] and "vertebrae.seg.nrrd" in summary["files"][0]
    assert stdout.split() == [str(tmp_path / "out" / name) for name in
                              ("vertebrae.nii.gz", "vertebrae.seg.nrrd", "vertebrae.png", "vertebrae.json")]


def test_an_unanchored_vertebra_run_says_so_and_prints_its_warning_on_a_line_of_its_own(tmp_path):
    phantom = make_ct_phantom(levels=[20, 21], spacing=(1.0, 1.0, 6.0), seed=4, margin_mm=10.0)
    write_volume(phantom.image, tmp_path / "thick.nii.gz")
    log, _ = run_to_log(tmp_path, "vertebrae", str(tmp_path / "thick.nii.gz"), "-o", str(tmp_path / "out"),
                        "--no-picture")
    record = json.loads((tmp_path / "out" / "vertebrae.json").read_text())
    assert record["warnings"] and not record["naming"]["anchored"]
    summary = summary_of(log)
    assert summary["naming"] == ["unanchored: names from the network's estimates only"]
    assert summary["warning"][-len(record["warnings"]):] == record["warnings"]
    during = [line for line in log.splitlines() if "thicker than 5 mm" in line]
    assert during and all(line[9:].startswith(("warning: ", "found", "naming")) for line in during)


def test_the_disc_warnings_are_printed(tmp_path):
    scan = require_real_data("mr_sct_t2", "t2.nii.gz")  # cervical: neither C2 nor the sacrum in view
    log, _ = run_to_log(tmp_path, "discs", str(scan), "-o", str(tmp_path / "out"), "--no-picture")
    record = json.loads((tmp_path / "out" / "discs.json").read_text())
    assert record["warnings"] and "neither C2 nor the sacrum" in record["warnings"][-1]
    summary = summary_of(log)
    assert summary["warning"][-len(record["warnings"]):] == record["warnings"]
    assert summary["naming"] == ["unanchored: no C2 or sacrum in view"]
    assert summary["found"][0].startswith(f"{len(record['discs'])} disc")
    assert read_card(find_model(None, "discs")).caveat in log


def test_a_disc_run_on_a_phantom_names_its_anchor_and_the_discs(tmp_path):
    phantom = make_mri_phantom(contrast="T2", seed=1000)
    write_volume(phantom.image, tmp_path / "mri.nrrd")
    log, _ = run_to_log(tmp_path, "discs", str(tmp_path / "mri.nrrd"), "-o", str(tmp_path / "out"), "--no-picture")
    assert "\r" not in log
    summary = summary_of(log)
    assert summary["found"] == ["8 discs (T10/T11-L5/S1)"]
    assert summary["naming"] == ["names counted from sacrum"]


def test_in_a_terminal_the_status_line_is_redrawn_and_a_warning_gets_its_own_line():
    stream = io.StringIO()
    display = TextProgress(stream, terminal=True)
    display(0.2, "searching (0 vertebrae so far)")
    display(0.3, "found vertebra 3")
    display.line("warning: neither the sacrum nor C2 is in view")
    display(0.9, "6 vertebrae")
    display.close()
    text = stream.getvalue()
    assert "found vertebra 3" in text and "[######..............]  30 %" in text
    # what stays on the screen: the warning on its own line, the status line cleared at the end
    assert [line.rstrip() for line in screen(text)] == ["warning: neither the sacrum nor C2 is in view", ""]


def screen(text: str) -> list[str]:
    """The lines a terminal shows after ``text``: a carriage return goes back to the line's start."""
    lines = []
    for written in text.split("\n"):
        shown = ""
        for part in written.split("\r"):
            shown = part + shown[len(part):]
        lines.append(shown)
    return lines


def test_outside_a_terminal_a_repeated_step_is_written_once():
    stream = io.StringIO()
    display = TextProgress(stream, terminal=False)
    for fraction in (0.1, 0.2, 0.3):
        display(fraction, "searching (2 vertebrae so far)")
    display(0.4, "found vertebra 3")
    lines = stream.getvalue().splitlines()
    assert [line[9:] for line in lines] == [" 10 %  searching (2 vertebrae so far)", " 40 %  found vertebra 3"]


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
