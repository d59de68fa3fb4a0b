"""Run the ``spineseg`` CLI (or any command) in a background process that reports progress.

Pure Python (subprocess, threads, a queue): no Qt, no slicer, so it is tested
with a tiny Python child. The Slicer widget polls :meth:`BackgroundProcess.poll`
from a QTimer; the batch script and the self-test call :meth:`wait`.

The child speaks the CLI's ``--progress-format json`` protocol on stdout
(:mod:`spineseg.progress` writes and parses it). Errors arrive on stderr with a
non-zero exit code. Other lines are passed on as log lines.
"""

from __future__ import annotations

import enum
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import IO, Any, Sequence

from spineseg import tasks
from spineseg.choices import DeviceChoice
from spineseg.progress import parse_protocol_line

__all__ = [
    "EventKind",
    "ProcessEvent",
    "ProcessState",
    "BackgroundProcess",
    "cli_command",
    "child_environment",
]


class EventKind(enum.Enum):
    PROGRESS = "progress"
    DONE = "done"
    LOG = "log"
    ERROR_LOG = "error_log"
    FINISHED = "finished"


class ProcessState(enum.Enum):
    NOT_STARTED = "not started"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


@dataclass(frozen=True)
class ProcessEvent:
    """One thing the child said: progress (fraction, message), done (outputs), or a log line."""

    kind: EventKind
    message: str = ""
    fraction: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)


def parse_stdout_line(line: str) -> ProcessEvent:
    """Turn one stdout line into an event; anything that is not protocol JSON is a log line."""
    record = parse_protocol_line(line)
    if record is None:
        return ProcessEvent(EventKind.LOG, line.strip())
    if record.done:
        return ProcessEvent(EventKind.DONE, record.message, 1.0, record.outputs)
    return ProcessEvent(EventKind.PROGRESS, record.message, record.fraction)


class BackgroundProcess:
    """A child process whose stdout/stderr are read by threads into a queue.

    Args:
        command: program and arguments.
        env: environment of the child (default: this process's).
        cwd: working folder of the child.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str] | None = None, cwd: str | None = None) -> None:
        if not command:
            raise ValueError("command must name a program, got an empty list")
        self.command = [str(part) for part in command]
        self.env = env
        self.cwd = cwd
        self.state = ProcessState.NOT_STARTED
        self.returncode: int | None = None
        self.outputs: dict[str, Any] = {}
        self.fraction = 0.0
        self.status_message = ""
        self.error_lines: list[str] = []
        self._events: queue.Queue[ProcessEvent] = queue.Queue()
        self._process: subprocess.Popen | None = None
        self._threads: list[threading.Thread] = []
        self._cancel_requested = False
        self._done_seen = False

    # -- running -----------------------------------------------------------------
    def start(self) -> None:
        """Start the child; returns at once."""
        if self.state is not ProcessState.NOT_STARTED:
            raise RuntimeError(f"the process was already started (state: {self.state.value})")
        options: dict[str, Any] = {}
        if os.name == "nt":
            options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # type: ignore[attr-defined]
        else:
            options["start_new_session"] = True  # own process group: cancel kills children too
        self._process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self.env,
            cwd=self.cwd,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
            **options,
        )
        self.state = ProcessState.RUNNING
        readers = [(self._process.stdout, False), (self._process.stderr, True)]
        self._threads = [
            threading.Thread(target=self._read, args=(stream, is_error), daemon=True) for stream, is_error in readers
        ]
        for thread in self._threads:
            thread.start()
        threading.Thread(target=self._watch, daemon=True).start()

    def _read(self, stream: IO[str], is_error: bool) -> None:
        for line in stream:
            if not line.strip():
                continue
            if is_error:
                self._events.put(ProcessEvent(EventKind.ERROR_LOG, line.rstrip()))
            else:
                self._events.put(parse_stdout_line(line))
        stream.close()

    def _watch(self) -> None:
        assert self._process is not None
        code = self._process.wait()
        for thread in self._threads:
            thread.join()
        self._events.put(ProcessEvent(EventKind.FINISHED, message=str(code)))

    def poll(self) -> list[ProcessEvent]:
        """Take the events that arrived since the last call and update the state; never blocks."""
        events = []
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            self._apply(event)
            events.append(event)
        return events

    def _apply(self, event: ProcessEvent) -> None:
        if event.kind is EventKind.PROGRESS:
            self.fraction = event.fraction or 0.0
            self.status_message = event.message
        elif event.kind is EventKind.DONE:
            self._done_seen = True
            self.outputs = dict(event.outputs)
            self.fraction = 1.0
        elif event.kind is EventKind.ERROR_LOG:
            self.error_lines.append(event.message)
            del self.error_lines[:-50]
        elif event.kind is EventKind.FINISHED:
            assert self._process is not None
            self.returncode = self._process.returncode
            if self._cancel_requested:
                self.state = ProcessState.CANCELLED
            elif self.returncode == 0 and self._done_seen:
                self.state = ProcessState.SUCCEEDED
            else:
                self.state = ProcessState.FAILED

    @property
    def finished(self) -> bool:
        return self.state in (ProcessState.SUCCEEDED, ProcessState.FAILED, ProcessState.CANCELLED)

    @property
    def error_message(self) -> str:
        """The child's last error line, or a plain note on how it ended."""
        if self.state is ProcessState.CANCELLED:
            return "cancelled by the user"
        if self.error_lines:
            return self.error_lines[-1]
        if self.returncode not in (None, 0):
            return f"the process ended with exit code {self.returncode}"
        if self.returncode == 0 and not self._done_seen:
            return "the process ended without reporting its outputs"
        return ""

    def wait(self, timeout: float | None = None, interval: float = 0.05) -> ProcessState:
        """Block until the child finishes (or ``timeout`` seconds pass); returns the state."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            self.poll()
            if deadline is not None and time.monotonic() > deadline:
                break
            time.sleep(interval)
        return self.state

    # -- cancelling --------------------------------------------------------------
    def cancel(self) -> None:
        """Kill the child and everything it started; the state becomes CANCELLED once it is gone."""
        if self._process is None or self.finished:
            return
        self._cancel_requested = True
        kill_process_tree(self._process)


def kill_process_tree(process: subprocess.Popen) -> None:
    """Kill a child started in its own process group (POSIX) or with taskkill /T (Windows)."""
    if os.name == "nt":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            check=False,
        )
        return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def cli_command(
    python_executable: str,
    task: tasks.TaskSpec | str,
    input_path: str | os.PathLike,
    output_dir: str | os.PathLike,
    device: DeviceChoice | str = DeviceChoice.AUTO,
    model: str | None = None,
    input_name: str | None = None,
    force_modality: bool = False,
) -> list[str]:
    """The command line that runs ``spineseg TASK INPUT -o OUTDIR --progress-format json --no-picture``.

    ``python -c`` with ``spineseg.entry.main`` (what the console script runs) is used instead of the ``spineseg``
    console script, which Slicer's Python does not have on its PATH. The module
    shows no picture, so none is drawn. ``input_name`` is what the JSON outputs
    record as the input (Slicer hands over a temporary copy). ``force_modality`` runs an image that does
    not look like the task's modality.
    """
    task, device = tasks.get(task), DeviceChoice(device)
    command = [
        python_executable,
        "-c",
        "import sys; from spineseg.entry import main; sys.exit(main())",
        task.name,
        str(input_path),
        "-o",
        str(output_dir),
        "--device",
        device.value,
        "--progress-format",
        "json",
        "--no-picture",
    ]
    if model:
        command += ["--model", str(model)]
    if input_name:
        command += ["--input-name", input_name]
    if force_modality:
        command.append("--force-modality")
    return command


def child_environment(core_parent: str | os.PathLike, device: DeviceChoice | str = DeviceChoice.AUTO,
                      base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the child: ``core_parent`` (the folder holding ``spineseg/``) first on
    PYTHONPATH; a CPU run hides the GPUs; output is unbuffered so progress arrives at once."""
    env = dict(os.environ if base is None else base)
    paths = [str(core_parent)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["PYTHONUNBUFFERED"] = "1"
    if DeviceChoice(device) is DeviceChoice.CPU:
        env["CUDA_VISIBLE_DEVICES"] = "-1"
    return env


def default_python() -> str:
    """PythonSlicer inside Slicer (found next to the running interpreter or on PATH), else this Python."""
    import shutil

    folder = os.path.dirname(sys.executable)
    for name in ("PythonSlicer", "PythonSlicer.exe"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return shutil.which("PythonSlicer") or sys.executable


__all__ += ["parse_stdout_line", "kill_process_tree", "default_python"]
