"""Publishing outputs: written whole or not at all, never clobbering or mixing two sets.

* :func:`atomic_path`: one file, moved into place complete.
* :func:`output_directory`: a set of files, staged in a hidden folder and published together. The clash
  check is repeated under a lock on the output folder at publish time, so of two runs into the same folder
  one wins whole and the other is refused. A staging folder records what it publishes before it moves
  anything (its commit), so a publish cut short by ``kill -9`` is finished by the next run, which leaves the
  complete new set; one killed before its commit leaves the old set untouched.
* Staging folders left by killed runs are found wherever they are (every run lists its staging folder in a
  per-user registry while it works) and are finished or removed by the next run.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import IO, Iterator, Sequence

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

from .cachedir import user_cache_folder
from .errors import CancelledError, DiskFullError, InputError

__all__ = [
    "atomic_path",
    "output_directory",
    "readable_by_others",
    "lock_file",
    "settle_stale_staging",
    "STAGING_PREFIX",
]

log = logging.getLogger(__name__)

STAGING_PREFIX = ".spineseg-partial-"
# Held (flock) by the job staging in the folder, so the next run can tell a live staging folder from a stale one.
STAGING_LOCK = ".lock"
# Written into a complete staging folder just before its files move: the folder to publish into, the set's
# names (the marker last), the names it holds and the old names to remove. Its presence means "roll forward".
STAGING_COMMIT = ".commit.json"
# Where flock is missing (Windows), a staging folder untouched this long is taken as left by a killed run.
STALE_STAGING_SECONDS = 24 * 3600
# A staging folder without its lock file is being created (a moment) or was left by a run killed at once.
UNLOCKED_STAGING_SECONDS = 60
NOTHING_PUBLISHED = "; no output was written"
# Errors that mean the disk (or the user's quota) is full.
_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def readable_by_others(path: Path) -> None:
    """Give a file (or folder) made by ``tempfile`` (0600/0700) the permissions the umask gives new files."""
    os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    The temporary name keeps the full suffix (``.nii.gz``, ``.seg.nrrd``) so
    writers that choose the format from it still do. The file gets the
    permissions the umask gives (``mkstemp`` alone would leave it private).

    Raises:
        DiskFullError: the disk is full; the old ``path``, if any, is kept.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".partial-", suffix="-" + path.name, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        readable_by_others(temporary)
        os.replace(temporary, path)
    except OSError as error:
        full = _disk_full(error, path, f"; {path.name} was left as it was")
        if full is None:
            raise
        raise full from None
    finally:
        if temporary.exists():
            temporary.unlink()


def _disk_full(error: OSError, target: Path, outcome: str) -> DiskFullError | None:
    """``error`` as a :class:`DiskFullError` writing ``target``, ending with ``outcome`` (what was left); None if
    it is another error."""
    if isinstance(error, OSError) and error.errno in _NO_SPACE:
        return DiskFullError(target, error.strerror or str(error), outcome)
    return None


def lock_file(path: str | os.PathLike) -> IO[bytes] | None:
    """Open ``path`` (created) and lock it for this process; None if another process holds it.

    Closing the handle, or the process ending in any way (``kill -9`` too),
    releases the lock. Where flock is missing (Windows) nothing is locked.
    """
    handle = open(path, "ab")
    if fcntl is not None:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
    return handle


@contextlib.contextmanager
def _folder_lock(folder: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``folder`` itself (flock on the directory; waits for another holder).

    Publishing into a folder and finishing a killed run's publish there happen
    under it, so they never interleave. Where flock is missing nothing is locked.
    """
    if fcntl is None:
        yield
        return
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX)
        yield
    finally:
        os.close(descriptor)  # releases the lock


@contextlib.contextmanager
def output_directory(path: str | os.PathLike, names: Sequence[str], overwrite: bool = False, *,
                     stale: Sequence[str] = ()) -> Iterator[Path]:
    """Stage outputs in a hidden folder and publish them into ``path`` as one set, only when all succeeded.

    A set is complete when its last name (the job's JSON, the marker) is present.
    Publishing, under a lock on ``path``, checks again that no other run
    published there meanwhile (without ``overwrite``), records the set in the
    staging folder (its commit), removes the old marker, then every old file of
    ``names`` and ``stale`` the new set does not replace (so an old picture never
    sits beside new results), moves the new files in and the marker last.
    SIGINT and SIGTERM wait for those renames (milliseconds, main thread); one
    that arrived meanwhile raises :class:`CancelledError` listing the complete
    set, so the caller can say truthfully what was left. A ``kill -9`` before the
    commit leaves the old set as it was; after it, the next run finishes the
    publish (see :func:`settle_stale_staging`), which leaves the new set whole.

    Args:
        path: the user's output folder (created if missing).
        names: file names the job will write, the marker last; existing ones are an error
            unless ``overwrite`` is set, so user data is never replaced by accident.
        overwrite: allow replacing existing files of those names (and removing those of ``stale``).
        stale: other files of an older set of the same kind, removed when the new set is published.

    On any exception nothing is left: neither the staged files nor a folder
    that did not exist before (unless another run published into it).

    Raises:
        InputError: ``path`` cannot be written (read-only, under a file, a symlink loop, a full disk), an
            output name is taken by a folder, or outputs exist (before predicting, or published by another
            run meanwhile) and ``overwrite`` is not set.
    """
    path = Path(path)
    all_names = [*names, *stale]
    settle_stale_staging([path] if path.is_dir() else [])  # a publish cut short here first, then the check
    _check_output_names(path, all_names, overwrite)
    try:
        created = _make_folder(path)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path))
    except OSError as error:
        raise InputError(f"cannot write to the output folder {path} ({error.strerror or error}: "
                         f"{error.filename or path}); choose a folder you can write to") from None
    lock = lock_file(staging / STAGING_LOCK)  # a new folder: nobody else holds it
    entry = _register(staging)
    published: list[Path] = []
    committed = False
    try:
        yield staging
        with _signals_deferred(), _folder_lock(path):
            _check_output_names(path, all_names, overwrite, meanwhile=True)
            try:
                _commit(staging, list(names), list(stale))
                committed = True
                published = _finish_publish(staging)
            except OSError as error:
                raise _disk_full(error, path, NOTHING_PUBLISHED) or InputError(
                    f"cannot move the outputs into {path} ({error}); it holds no complete set (no {names[-1]})"
                    + ("; the next SpineSeg run finishes the publish" if committed else "")) from None
    except (KeyboardInterrupt, CancelledError) as error:
        if published:
            raise CancelledError(f"interrupted after writing a complete set to {path}", written=published) from error
        raise
    except DiskFullError as error:  # from atomic_path, which named the staged file
        raise DiskFullError(path / Path(error.target).name, error.reason, NOTHING_PUBLISHED) from None
    except OSError as error:
        full = _disk_full(error, path / Path(error.filename).name if error.filename else path, NOTHING_PUBLISHED)
        if full is None:
            raise
        raise full from None
    finally:
        if lock is not None:
            lock.close()
        if published or not committed:  # a publish cut short after its commit is left for the next run to finish
            shutil.rmtree(staging, ignore_errors=True)
            _unregister(entry)
        if created and not published:
            with contextlib.suppress(OSError):
                path.rmdir()  # only if empty: a run beside this one may have published there


def _make_folder(path: Path) -> bool:
    """Create ``path`` (and its parents); True if this call created it (so it may remove it again)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        path.mkdir()
    except FileExistsError:
        if not path.is_dir():
            raise
        return False
    return True


def _check_output_names(path: Path, names: Sequence[str], overwrite: bool, meanwhile: bool = False) -> None:
    if path.exists() and not path.is_dir():
        raise InputError(f"output path {path} exists and is not a folder")
    if path.is_symlink() and not path.exists():
        raise InputError(f"output path {path} is a symbolic link that leads nowhere (dangling or a loop); "
                         "remove it or choose another folder")
    folders = [name for name in names if (path / name).is_dir()]
    if folders:
        raise InputError(f"{path / folders[0]} is a folder where an output file goes; move it away or choose "
                         "another output folder")
    clashes = [name for name in names if os.path.lexists(path / name)]
    if clashes and not overwrite:
        when = ", written by another run while this one worked" if meanwhile else ""
        raise InputError(f"{path} already holds {', '.join(clashes)}{when}; choose another folder or "
                         "pass --overwrite")


def _commit(staging: Path, names: list[str], stale: list[str]) -> None:
    """Record in ``staging`` the set it publishes (written whole: a rename), before anything moves."""
    document = {"names": names, "stale": stale, "new": [name for name in names if (staging / name).exists()]}
    temporary = staging / (STAGING_COMMIT + ".partial")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, staging / STAGING_COMMIT)


def _finish_publish(staging: Path) -> list[Path]:
    """Move a committed staging folder's files into its parent folder; returns the files of the new set.

    The old marker goes first while the new one is still staged, every old file
    the new set does not replace goes next, then the new files and the marker
    last, so no moment shows old and new files beside a marker. Each step can
    be repeated, so a publish cut short is finished by running this again.
    """
    path = staging.parent
    commit = json.loads((staging / STAGING_COMMIT).read_text())
    names, new = commit["names"], commit["new"]
    gone = [name for name in [*names, *commit["stale"]] if name not in new]
    for name in [names[-1], *gone] if (staging / names[-1]).exists() else gone:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / name)
    for name in new:
        if (staging / name).exists():
            os.replace(staging / name, path / name)
    return [path / name for name in new]


def _registry_folder() -> Path:
    """Where this user's running jobs list their staging folders (so a killed one's is found from anywhere)."""
    return user_cache_folder() / "staging"


def _register(staging: Path) -> Path | None:
    """List ``staging`` in the registry; None where the registry cannot be written (only that folder is then
    searched by the next run there)."""
    try:
        folder = _registry_folder()
        folder.mkdir(parents=True, exist_ok=True)
        entry = folder / f"{uuid.uuid4().hex}.path"
        entry.write_text(str(staging.resolve()))
        return entry
    except OSError:
        return None


def _unregister(entry: Path | None) -> None:
    if entry is not None:
        with contextlib.suppress(OSError):
            entry.unlink()


def _claim(staging: Path) -> tuple[bool, IO[bytes] | None]:
    """Whether a staging folder was left by a run that no longer runs, and, if so, its lock now held by us.

    A run holds its folder's lock as long as it lives (``kill -9`` releases it);
    taking the lock makes sure no other run settles the folder at the same time.
    """
    if fcntl is None:
        return time.time() - staging.stat().st_mtime > STALE_STAGING_SECONDS, None
    try:
        handle = open(staging / STAGING_LOCK, "rb")
    except FileNotFoundError:  # killed before it locked, or being created right now: go by age
        return time.time() - staging.stat().st_mtime > UNLOCKED_STAGING_SECONDS, None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return False, None
    return True, handle


def _settle(staging: Path) -> None:
    """Finish the publish of a stale, committed staging folder, then remove it; leave a live one alone."""
    if not staging.name.startswith(STAGING_PREFIX) or staging.is_symlink() or not staging.is_dir():
        return
    try:
        stale, handle = _claim(staging)
    except OSError:
        return
    if not stale:
        return
    try:
        if (staging / STAGING_COMMIT).is_file():
            with _folder_lock(staging.parent):
                written = _finish_publish(staging)
            log.warning("finished publishing %s, cut short by a run that was killed",
                        ", ".join(str(p) for p in written))
        else:
            log.info("removing %s, left by a run that was killed", staging)
    except (OSError, ValueError, KeyError) as error:
        log.warning("cannot finish the publish in %s (%s); removing it", staging, error)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if handle is not None:
            handle.close()


def settle_stale_staging(folders: Sequence[Path] = ()) -> None:
    """Finish or remove the staging folders left by killed runs: every one the registry lists, wherever it is,
    and any in ``folders`` (left by runs that could not write the registry)."""
    registry = _registry_folder()
    with contextlib.suppress(OSError):
        for entry in registry.glob("*.path"):
            try:
                staging = Path(entry.read_text().strip())
            except OSError:
                continue
            _settle(staging)
            if not staging.exists():
                with contextlib.suppress(OSError):
                    entry.unlink()
    for folder in folders:
        for staging in Path(folder).glob(STAGING_PREFIX + "*"):
            _settle(staging)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """Hold SIGINT and SIGTERM until the block is done, then act on one that arrived as its handler would have.

    Handlers are swapped rather than the signals masked: the kernel would hand a
    masked signal to another thread (torch's), whose handler runs at once.
    Only the main thread sets handlers; in others Python runs no handler anyway.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []
    previous = {number: signal.signal(number, lambda received, frame: arrived.append(received))
                for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in arrived[:1]:
            handler = previous[number]
            if callable(handler):
                handler(number, None)
            elif handler == signal.SIG_DFL:
                signal.raise_signal(number)
