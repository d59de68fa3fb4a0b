"""A stop during the start-up of the CLI or the batch program (Ctrl-C or SIGTERM while Python imports the
command) exits 130 with one line and no traceback.

The stop is sent to the real console script at several moments of its start-up, counted from when its
handlers are in place (read from /proc: Python itself never catches SIGTERM). What comes before that is
Python's own start-up (``site``, a few tens of milliseconds), which no package code can reach.
"""

from __future__ import annotations

import importlib.metadata
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from spineseg.exits import EXIT_INTERRUPTED, NOTHING_WRITTEN


def console_command() -> list[str]:
    """The installed ``spineseg`` script beside this Python, else what it runs."""
    script = Path(sys.executable).with_name("spineseg")
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from spineseg.entry import main; sys.exit(main())"]


def handlers_installed(pid: int) -> bool:
    """Whether the process catches SIGTERM, i.e. :func:`spineseg.entry.install_startup_handlers` has run."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    caught = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigCgt:"))
    return bool(caught >> (signal.SIGTERM - 1) & 1)


BATCH_SCRIPT = Path(__file__).resolve().parents[1] / "SpineSegExtension" / "SpineSegLib" / "batch.py"


def run_until(arguments: list[str], delay: float, signum: int | None,
              command: list[str] | None = None) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``command`` (default the console script); once its handlers are in, wait ``delay`` seconds and send
    ``signum``.

    Returns the result and the seconds it took the handlers to be in place.
    """
    start = time.monotonic()
    process = subprocess.Popen([*(command or console_command()), *arguments], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    while not handlers_installed(process.pid) and process.poll() is None:
        time.sleep(0.001)
    handlers_in = time.monotonic() - start
    if signum is not None:
        time.sleep(delay)
        assert process.poll() is None, "the command ended before the signal: not a start-up moment"
        process.send_signal(signum)
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr), handlers_in


def seconds_to_first_line(command: list[str]) -> tuple[float, str]:
    """Seconds from the command's handlers being in place to its first line on stderr, and that line.

    The first line (a refusal, or the batch's first case) ends the start-up; what follows, Python's own
    shutdown included, is not a start-up moment, however long it takes on a loaded machine.
    """
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not handlers_installed(process.pid) and process.poll() is None:
        time.sleep(0.001)
    start = time.monotonic()
    line = process.stderr.readline()
    seconds = time.monotonic() - start
    process.communicate(timeout=300)
    return seconds, line


@pytest.fixture(scope="module")
def start_up_seconds(tmp_path_factory) -> float:
    """How long the command takes from its handlers to refusing an empty file (imports, parsing, reading): the
    quickest of three runs, so that a run slowed by a busy machine cannot push a late signal past the refusal."""
    image = tmp_path_factory.mktemp("timing") / "ct.nii.gz"
    image.write_bytes(b"")
    runs = [seconds_to_first_line([*console_command(), "vertebrae", str(image), "-o", str(image.parent / "out")])
            for _ in range(3)]
    for _, line in runs:
        assert "empty file" in line, line
    return min(seconds for seconds, _ in runs)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc to see the handlers")
@pytest.mark.parametrize("moment", [0.0, 0.05, 0.15, 0.3, 0.6])
def test_a_stop_during_start_up_exits_130_with_one_line(tmp_path, start_up_seconds, signum, moment):
    """``moment``: the fraction of the start-up time after which the signal comes (0.0: as the handlers are in)."""
    image = tmp_path / "ct.nii.gz"
    image.write_bytes(b"")  # refused once read: the stop must come first
    out = tmp_path / "out"
    result, _ = run_until(["vertebrae", str(image), "-o", str(out)], moment * start_up_seconds, signum)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_INTERRUPTED, (result.returncode, result.stderr)
    assert result.stderr.strip().splitlines() == [NOTHING_WRITTEN]
    assert result.stdout == ""
    assert not out.exists()


def test_the_console_script_installs_its_handlers_before_the_heavy_imports():
    (script,) = importlib.metadata.entry_points(group="console_scripts", name="spineseg")
    assert script.value == "spineseg.entry:main"
    code = ("import sys, signal; from spineseg import entry; entry.install_startup_handlers(); "
            "heavy = [m for m in ('numpy', 'SimpleITK', 'torch', 'tqdm', 'typing', 'pathlib') if m in sys.modules]; "
            "assert signal.getsignal(signal.SIGINT) is entry._exit_during_startup; print(heavy)")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "SpineSegExtension")})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


@pytest.fixture(scope="module")
def batch_start_up_seconds(tmp_path_factory) -> float:
    """How long the batch program takes from its handlers to starting its first case (imports, model)."""
    folder = tmp_path_factory.mktemp("batch_timing")
    (folder / "ct.nii.gz").write_bytes(b"")
    seconds, line = seconds_to_first_line([sys.executable, str(BATCH_SCRIPT), "--task", "vertebrae", "--input",
                                           str(folder / "ct.nii.gz"), "--output", str(folder / "out")])
    assert "[1/1] ct" in line, line  # the model is loaded and the first case starts
    return seconds


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs Linux's /proc to see the handlers")
@pytest.mark.parametrize("moment", [0.0, 0.05, 0.15])  # well inside the imports, whatever the load
def test_a_stop_during_the_batch_start_up_exits_130_without_a_traceback(tmp_path, batch_start_up_seconds, signum,
                                                                         moment):
    (tmp_path / "ct.nii.gz").write_bytes(b"")
    out = tmp_path / "out"
    result, _ = run_until(["--task", "vertebrae", "--input", str(tmp_path / "ct.nii.gz"), "--output", str(out)],
                          moment * batch_start_up_seconds, signum, [sys.executable, str(BATCH_SCRIPT)])
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == EXIT_INTERRUPTED, (result.returncode, result.stderr)
    assert "interrupted" in result.stderr.strip().splitlines()[-1]
    assert not out.exists() or not any(out.rglob("*"))
