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
from pathlib import Path
from typing import Iterator, NamedTuple

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .volume import LPS_FROM_RAS, Volume, VolumeKind

__all__ = [
    "read_volume",
    "write_volume",
    "volume_from_sitk",
    "volume_to_sitk",
    "output_directory",
    "atomic_path",
]


def volume_from_sitk(image: sitk.Image, kind: VolumeKind = VolumeKind.INTENSITY) -> Volume:
    """Convert a SimpleITK image (LPS, ``[k, j, i]`` array) into a :class:`Volume`."""
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


def _read_dicom_folder(folder: Path) -> sitk.Image:
    reader = sitk.ImageSeriesReader()
    series_ids = reader.GetGDCMSeriesIDs(str(folder)) or []
    if not series_ids:
        raise InputError(f"{folder} is a folder but holds no DICOM series")
    # The series with the most slices is the scan; localisers come with few.
    files = max((reader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series_ids), key=len)
    reader.SetFileNames(files)
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


def read_volume(path: str | os.PathLike, kind: VolumeKind = VolumeKind.INTENSITY) -> Volume:
    """Read a 3D image file or DICOM folder and check that it can be used.

    Raises:
        InputError: the path is missing, not an image, not 3D, empty, has
            non-positive spacing or non-finite voxels.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    try:
        if path.is_dir():
            image = _read_dicom_folder(path)
        else:
            if path.stat().st_size == 0:
                raise InputError(f"{path} is an empty file")
            _check_file_integrity(path)
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
