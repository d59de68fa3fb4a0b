"""Reading and writing images, and the LPS/KJI <-> RAS/IJK conversion at the edge.

Everything SimpleITK reads is accepted: NIfTI, NRRD, MHA, a DICOM folder.
Outputs are written atomically, so an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import contextlib
import gzip
import os
import shutil
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError
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
]


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
    array = sitk.GetArrayFromImage(image).transpose(2, 1, 0)
    return Volume(np.ascontiguousarray(array), affine, kind)


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
    series = []
    for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder)) or []:
        files = tuple(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid))
        first = _header_reader(files[0])
        series.append(DicomSeries(uid, _dicom_tag(first, "0008|0060").upper(), _dicom_tag(first, "0008|103e"), files))
    return series


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; move it into place on success.

    The temporary name keeps the full suffix (``.nii.gz``, ``.seg.nrrd``) so
    writers that choose the format from it still do.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(prefix=".partial-", suffix="-" + path.name, dir=path.parent)
    os.close(handle)
    temporary = Path(name)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


@contextlib.contextmanager
def output_directory(path: str | os.PathLike, names: list[str], overwrite: bool = False) -> Iterator[Path]:
    """Stage outputs in a hidden folder and move them into ``path`` only when all succeeded.

    Args:
        path: the user's output folder (created if missing).
        names: file names the job will write; existing ones are an error
            unless ``overwrite`` is set, so user data is never replaced by accident.
        overwrite: allow replacing existing files of those names.

    On any exception nothing is left: neither the staged files nor a folder
    that did not exist before.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise InputError(f"output path {path} exists and is not a folder")
    clashes = [name for name in names if (path / name).exists()]
    if clashes and not overwrite:
        raise InputError(
            f"{path} already holds {', '.join(clashes)}; choose another folder or pass --overwrite"
        )
    created = not path.exists()
    path.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".spineseg-partial-", dir=path))
    try:
        yield staging
        for name in names:
            if (staging / name).exists():
                os.replace(staging / name, path / name)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
