"""Reading and writing images, and the LPS/KJI <-> RAS/IJK conversion at the edge.

Everything SimpleITK reads is accepted: NIfTI, NRRD, MHA, a DICOM folder.
Outputs are written atomically, so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import shutil
import signal
import struct
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterator, NamedTuple, Sequence

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None

import numpy as np
import SimpleITK as sitk

from .errors import CancelledError, InputError
from .volume import LPS_FROM_RAS, Volume, VolumeKind

__all__ = [
    "read_volume",
    "list_dicom_series",
    "choose_dicom_series",
    "DicomSeries",
    "write_volume",
    "volume_from_sitk",
    "volume_to_sitk",
    "output_directory",
    "atomic_path",
    "readable_by_others",
    "lock_file",
    "STAGING_PREFIX",
]

log = logging.getLogger(__name__)


# Largest deviation of the direction matrix's columns from perpendicular unit vectors (cosine of the angle
# between two axes) that is still rounding: files store directions to about 6 digits.
MAX_DIRECTION_SHEAR = 1e-4


def volume_from_sitk(image: sitk.Image, kind: VolumeKind = VolumeKind.INTENSITY) -> Volume:
    """Convert a SimpleITK image (LPS, ``[k, j, i]`` array) into a :class:`Volume`.

    Raises:
        InputError: not a 3D single-channel image, non-positive spacing, or axes that are not perpendicular
            (a sheared grid: NIfTI cannot store it, so outputs could not lie on the input's grid).
    """
    if image.GetDimension() != 3:
        raise InputError(
            f"expected a 3D image, got a {image.GetDimension()}D image of size {image.GetSize()}"
        )
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(
            f"expected a single-channel image, got {image.GetNumberOfComponentsPerPixel()} channels per voxel"
        )
    spacing = np.asarray(image.GetSpacing(), dtype=float)
    if np.any(~np.isfinite(spacing)) or np.any(spacing <= 0):
        raise InputError(f"the voxel spacing must be positive, got {tuple(spacing)} mm")
    direction_lps = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    shear = np.abs(direction_lps.T @ direction_lps - np.eye(3)).max()
    if shear > MAX_DIRECTION_SHEAR:
        raise InputError(
            f"the image's axes are not perpendicular (sheared direction matrix, off by {shear:.3g}); "
            "resample it onto an orthogonal grid first"
        )
    origin_lps = np.asarray(image.GetOrigin(), dtype=float)
    affine = np.eye(4)
    affine[:3, :3] = LPS_FROM_RAS @ direction_lps @ np.diag(spacing)
    affine[:3, 3] = LPS_FROM_RAS @ origin_lps
    # One copy, straight from SimpleITK's buffer into [i, j, k] order (a large CT is held twice, not three times).
    array = np.ascontiguousarray(sitk.GetArrayViewFromImage(image).transpose(2, 1, 0))
    return Volume(array, affine, kind)


def volume_to_sitk(volume: Volume) -> sitk.Image:
    """Convert a :class:`Volume` into a SimpleITK image with LPS geometry."""
    image = sitk.GetImageFromArray(np.ascontiguousarray(volume.array.transpose(2, 1, 0)))
    image.SetSpacing(tuple(float(s) for s in volume.spacing))
    image.SetOrigin(tuple(float(x) for x in LPS_FROM_RAS @ volume.origin))
    image.SetDirection(tuple(float(x) for x in (LPS_FROM_RAS @ volume.direction).ravel()))
    return image


def _check_metaio_spacing(path: Path) -> None:
    """Refuse a MetaImage header (.mha, .mhd) with a negative spacing.

    ITK reads ``ElementSpacing = 1 1 -3`` as a flipped axis, other readers as an
    error; which way the writer meant is unknowable, and the wrong guess turns
    the spine upside down (and its names with it).
    """
    with open(path, "rb") as stream:
        for raw in stream:
            key, _, value = raw.decode("latin-1").partition("=")
            key = key.strip()
            if key in ("ElementSpacing", "ElementSize"):
                try:
                    spacing = [float(v) for v in value.split()]
                except ValueError:
                    return  # not numbers: ITK reports the damage
                if any(v < 0 for v in spacing):
                    raise InputError(f"{path} has a negative voxel spacing ({value.strip()}) in its header; "
                                     "it is ambiguous, so flip the axis and give a positive spacing")
            if key == "ElementDataFile":
                return


# A series with fewer slices than this is a localiser (scouts have 1-3 images), not the scan.
MIN_SCAN_SLICES = 5
# Slice steps may differ from their median by this share before a slice counts as missing (or extra):
# positions are stored to a few decimals, real gaps are a whole step.
SLICE_STEP_TOLERANCE = 0.1


@dataclass(frozen=True)
class DicomSeries:
    """One series in a DICOM folder: what the user needs to tell series apart, and its files."""

    uid: str
    modality: str
    description: str
    files: tuple[str, ...]

    def __str__(self) -> str:
        return f"{self.uid} ({self.modality or 'no modality'}, {self.description or 'no description'!r}, " \
               f"{len(self.files)} slices)"


def _dicom_tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _header_reader(file_name: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.ReadImageInformation()
    return reader


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every series in a DICOM folder with its modality (0008,0060) and description (0008,103E)."""
    folder = Path(folder)
    series = []
    with _scannable(folder) as scanned:
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(scanned)) or []:
            found = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(scanned), uid)
            files = tuple(str(folder / Path(name).name) for name in found)
            first = _header_reader(files[0])
            series.append(DicomSeries(uid, _dicom_tag(first, "0008|0060").upper(), _dicom_tag(first, "0008|103e"),
                                      files))
    return series


@contextlib.contextmanager
def _scannable(folder: Path) -> Iterator[Path]:
    """``folder``, or where it holds a dangling or looping symlink, a temporary folder of links to its files.

    GDCM gives up on the whole folder when one entry cannot be opened, so a
    stray link would hide a valid series; the links keep the file names.
    """
    entries = list(folder.iterdir())
    if all(entry.is_file() or entry.is_dir() for entry in entries):
        yield folder
        return
    with tempfile.TemporaryDirectory(prefix="spineseg-dicom-") as view:
        for entry in entries:
            if entry.is_file():
                os.symlink(entry.resolve(), Path(view) / entry.name)
        yield Path(view)


def choose_dicom_series(folder: Path, found: list[DicomSeries], modality: str | None, uid: str | None) -> DicomSeries:
    """The series to read: the one named by ``uid``, else the only scan of ``modality``, else the only series.

    Raises:
        InputError: ``uid`` is not in the folder, or the choice is ambiguous; the message lists the series.
    """
    listing = "; ".join(str(s) for s in found)
    if uid is not None:
        chosen = [s for s in found if s.uid == uid]
        if not chosen:
            raise InputError(f"{folder} holds no series {uid}; it holds: {listing}")
        return chosen[0]
    scans = [s for s in found if len(s.files) >= MIN_SCAN_SLICES] or found
    matching = [s for s in scans if modality is None or s.modality == modality]
    if len(matching) == 1:
        return matching[0]
    if not matching and len(scans) == 1:
        return scans[0]  # no modality tag to go by: the intensity checks decide
    wanted = f"{modality} " if modality else ""
    raise InputError(f"{folder} holds {len(matching) or 'no'} {wanted}series among {len(found)}, so none is "
                     f"taken silently: {listing}; pick one with --series UID")


def _check_slice_steps(series: DicomSeries) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice would stretch the volume)."""
    positions = []
    for file_name in series.files:
        reader = _header_reader(file_name)
        try:
            position = np.array([float(v) for v in _dicom_tag(reader, "0020|0032").split("\\")])
            cosines = np.array([float(v) for v in _dicom_tag(reader, "0020|0037").split("\\")])
            positions.append(float(position @ np.cross(cosines[:3], cosines[3:])))
        except ValueError:
            return  # no positions to judge by: ITK reads the slices in file order
    steps = np.diff(np.sort(positions))
    if len(steps) < 2:
        return
    typical = float(np.median(steps))
    if typical <= 0 or np.any(np.abs(steps - typical) > SLICE_STEP_TOLERANCE * typical):
        raise InputError(f"the slices of series {series.uid} are unevenly spaced ({steps.min():.2f} to "
                         f"{steps.max():.2f} mm, typically {typical:.2f} mm): a slice is missing or doubled; "
                         "complete the series or resample it to even spacing first")


def _read_dicom_folder(folder: Path, modality: str | None, series_uid: str | None) -> sitk.Image:
    found = list_dicom_series(folder)
    if not found:
        raise InputError(f"{folder} is a folder but holds no DICOM series")
    chosen = choose_dicom_series(folder, found, modality, series_uid)
    _check_slice_steps(chosen)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    return reader.Execute()


_NIFTI_BYTES_PER_TYPE = {2: 1, 4: 2, 8: 4, 16: 4, 64: 8, 256: 1, 512: 2, 768: 4, 1024: 8, 1280: 8}
_NIFTI_FLOAT_TYPES = {16: "f4", 64: "f8"}


class _NiftiLayout(NamedTuple):
    """Where a NIfTI-1 file's voxels are, and their type when it is floating point (checked for NaN)."""

    data_offset: int
    data_bytes: int
    float_dtype: np.dtype | None


def _check_file_integrity(path: Path) -> None:
    """Catch damage SimpleITK reads silently: truncated data, zero NIfTI spacing, NaN in NIfTI.

    ITK fills a truncated compressed file with zeros, turns a zero NIfTI
    pixdim into 1 mm and reads NaN voxels of a NIfTI file as 0, so these checks
    look at the file itself, in one streaming pass. Other formats and DICOM
    folders pass through unchanged (SimpleITK reports their errors).
    """
    name = path.name.lower()
    is_nifti = name.endswith(".nii") or name.endswith(".nii.gz")
    try:
        with (gzip.open(path, "rb") if name.endswith(".gz") else open(path, "rb")) as stream:
            header = stream.read(352)
            layout = _nifti_layout(path, header) if is_nifti else None
            size, non_finite = len(header), 0
            float_dtype = layout.float_dtype if layout is not None else None
            if float_dtype is not None:
                stream.read(max(layout.data_offset - len(header), 0))
                size = max(size, layout.data_offset)
            while chunk := stream.read(1 << 22):
                if float_dtype is not None:
                    usable = len(chunk) - len(chunk) % float_dtype.itemsize
                    non_finite += int(np.count_nonzero(~np.isfinite(np.frombuffer(chunk[:usable], float_dtype))))
                size += len(chunk)
    except PermissionError:
        raise  # not damage: read_volume says so
    except (OSError, EOFError, zlib.error) as error:
        raise InputError(f"cannot read {path}: the file is truncated or damaged ({error})") from None
    if layout is None:
        return
    expected = layout.data_offset + layout.data_bytes
    if size < expected:
        raise InputError(f"cannot read {path}: the file is truncated ({size} of {expected} bytes)")
    if non_finite:
        raise InputError(f"{path} has {non_finite} NaN or infinite voxel(s); fix or mask them first")


def _nifti_layout(path: Path, header: bytes) -> _NiftiLayout | None:
    """The voxel layout a NIfTI-1 header describes; None if ``header`` is not one.

    Raises InputError for non-positive spatial spacing.
    """
    if len(header) < 348:
        return None
    for order in ("<", ">"):
        if struct.unpack(order + "i", header[:4])[0] == 348:
            break
    else:
        return None  # not a NIfTI-1 header; let SimpleITK decide
    dims = struct.unpack(order + "8h", header[40:56])
    datatype = struct.unpack(order + "h", header[70:72])[0]
    pixdim = struct.unpack(order + "8f", header[76:108])
    data_offset = int(struct.unpack(order + "f", header[108:112])[0])
    ndim = max(1, min(int(dims[0]), 7))
    spatial = pixdim[1 : min(ndim, 3) + 1]
    if any(not value > 0 for value in spatial):
        raise InputError(f"{path} has voxel spacing {tuple(round(v, 4) for v in spatial)} mm; spacing must be positive")
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]]))
    float_type = _NIFTI_FLOAT_TYPES.get(datatype)
    dtype = np.dtype(order + float_type) if float_type else None
    return _NiftiLayout(data_offset, voxels * _NIFTI_BYTES_PER_TYPE.get(datatype, 1), dtype)


def read_volume(path: str | os.PathLike, kind: VolumeKind = VolumeKind.INTENSITY, *,
                modality: str | None = None, series: str | None = None) -> Volume:
    """Read a 3D image file or DICOM folder and check that it can be used.

    Args:
        path: an image file or a DICOM folder.
        kind: intensities or labels.
        modality: for a DICOM folder, the modality (0008,0060) of the scan to take, e.g. "CT" or "MR".
        series: for a DICOM folder, the series to take (as :func:`list_dicom_series` names it).

    Raises:
        InputError: the path is missing, not an image, not 3D, empty, has
            non-positive spacing or non-finite voxels; a DICOM folder whose
            series to take is ambiguous, or whose slices are unevenly spaced.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    try:
        if path.is_dir():
            image = _read_dicom_folder(path, modality, series)
        else:
            if path.stat().st_size == 0:
                raise InputError(f"{path} is an empty file")
            _check_file_integrity(path)
            if path.name.lower().endswith((".mha", ".mhd")):
                _check_metaio_spacing(path)
            image = sitk.ReadImage(str(path))
    except PermissionError as error:
        raise InputError(f"cannot read {error.filename or path}: permission denied; make it readable "
                         "(chmod) or run as a user who may read it") from None
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()[-1] if str(error).strip() else "unknown reason"
        raise InputError(
            f"cannot read {path} as an image (NIfTI, NRRD, MHA or a DICOM folder): {first_line}"
        ) from None
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        image = image[:, :, :, 0]
    volume = volume_from_sitk(image, kind)
    if volume.array.dtype.kind == "f" and not np.all(np.isfinite(volume.array)):
        count = int(np.count_nonzero(~np.isfinite(volume.array)))
        raise InputError(f"{path} has {count} NaN or infinite voxel(s); fix or mask them first")
    return volume


def write_volume(volume: Volume, path: str | os.PathLike) -> None:
    """Write a volume atomically (the file appears complete or not at all)."""
    with atomic_path(path) as temporary:
        sitk.WriteImage(volume_to_sitk(volume), str(temporary), useCompression=True)


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
    finally:
        if temporary.exists():
            temporary.unlink()


STAGING_PREFIX = ".spineseg-partial-"
# Held (flock) by the job staging in the folder, so the next run can tell a live staging folder from a stale one.
STAGING_LOCK = ".lock"
# Where flock is missing (Windows), a staging folder untouched this long is taken as left by a killed run.
STALE_STAGING_SECONDS = 24 * 3600
# A staging folder without its lock file is being created (a moment) or was left by a run killed at once.
UNLOCKED_STAGING_SECONDS = 60


@contextlib.contextmanager
def output_directory(path: str | os.PathLike, names: Sequence[str], overwrite: bool = False, *,
                     stale: Sequence[str] = ()) -> Iterator[Path]:
    """Stage outputs in a hidden folder and publish them into ``path`` as one set, only when all succeeded.

    A set is complete when its last name (the job's JSON, the marker) is present.
    Publishing removes the old marker first, then every old file of ``names``
    and ``stale`` the new set does not replace (so an old picture never sits
    beside new results), moves the new files in and the marker last. SIGINT and
    SIGTERM wait for those renames (milliseconds, main thread); one that arrived
    meanwhile raises :class:`CancelledError` listing the complete set, so the
    caller can say truthfully what was left. Even ``kill -9`` mid-publish leaves no
    complete-looking mix, only a set without its marker. Staging folders left by
    a killed run are removed by the next run in ``path``.

    Args:
        path: the user's output folder (created if missing).
        names: file names the job will write, the marker last; existing ones are an error
            unless ``overwrite`` is set, so user data is never replaced by accident.
        overwrite: allow replacing existing files of those names (and removing those of ``stale``).
        stale: other files of an older set of the same kind, removed when the new set is published.

    On any exception nothing is left: neither the staged files nor a folder
    that did not exist before.

    Raises:
        InputError: ``path`` cannot be written (read-only, under a file, a symlink loop), an output name is
            taken by a folder, or outputs exist and ``overwrite`` is not set.
    """
    path = Path(path)
    _check_output_names(path, [*names, *stale], overwrite)
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
        _remove_stale_staging(path)
        staging = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=path))
    except OSError as error:
        raise InputError(f"cannot write to the output folder {path} ({error.strerror or error}: "
                         f"{error.filename or path}); choose a folder you can write to") from None
    lock = lock_file(staging / STAGING_LOCK)  # a new folder: nobody else holds it
    published: list[Path] = []
    try:
        yield staging
        with _signals_deferred():
            try:
                published = _publish(staging, path, list(names), stale)
            except OSError as error:
                raise InputError(f"cannot move the outputs into {path} ({error}); it holds no complete set "
                                 f"(no {names[-1]})") from None
    except (KeyboardInterrupt, CancelledError) as error:
        if not published:
            _remove_created(path, created)
            raise
        raise CancelledError(f"interrupted after writing a complete set to {path}", written=published) from error
    except BaseException:
        _remove_created(path, created)
        raise
    finally:
        if lock is not None:
            lock.close()
        shutil.rmtree(staging, ignore_errors=True)


def _check_output_names(path: Path, names: Sequence[str], overwrite: bool) -> None:
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
        raise InputError(
            f"{path} already holds {', '.join(clashes)}; choose another folder or pass --overwrite"
        )


def _remove_created(path: Path, created: bool) -> None:
    if created:
        shutil.rmtree(path, ignore_errors=True)


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


def _is_stale(staging: Path) -> bool:
    """Whether a staging folder was left by a run that no longer runs (its lock is free)."""
    if fcntl is None:
        return time.time() - staging.stat().st_mtime > STALE_STAGING_SECONDS
    try:
        with open(staging / STAGING_LOCK, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except FileNotFoundError:  # killed before it locked, or being created right now: go by age
        return time.time() - staging.stat().st_mtime > UNLOCKED_STAGING_SECONDS
    return True


def _remove_stale_staging(path: Path) -> None:
    for staging in path.glob(STAGING_PREFIX + "*"):
        if staging.is_dir() and not staging.is_symlink() and _is_stale(staging):
            log.info("removing %s, left by a run that was killed", staging)
            shutil.rmtree(staging, ignore_errors=True)


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


def _publish(staging: Path, path: Path, names: list[str], stale: Sequence[str]) -> list[Path]:
    """Move the staged files into ``path``, the marker (last of ``names``) last; returns the files published.

    The old marker goes first and every old file the new set does not replace
    goes next, so no moment shows old and new files beside a marker.
    """
    new = [name for name in names if (staging / name).exists()]
    for name in [names[-1], *(name for name in [*names, *stale] if name not in new)]:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path / name)
    for name in new:
        os.replace(staging / name, path / name)
    return [path / name for name in new]
