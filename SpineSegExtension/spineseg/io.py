"""Reading and writing images, and the LPS/KJI <-> RAS/IJK conversion at the edge.

Everything SimpleITK reads is accepted: NIfTI, NRRD, MHA, a DICOM folder.
Images are written atomically (:func:`spineseg.publish.atomic_path`), so an
interrupted run never leaves a half-written file behind; sets of outputs are
published by :mod:`spineseg.publish`.
"""

from __future__ import annotations

import contextlib
import errno
import gzip
import logging
import os
import shutil
import stat
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence

import numpy as np
import SimpleITK as sitk

from .errors import InputError
from .publish import atomic_path
from .volume import LPS_FROM_RAS, Volume, VolumeKind

__all__ = [
    "read_volume",
    "read_input",
    "list_dicom_series",
    "choose_dicom_series",
    "DicomSeries",
    "write_volume",
    "volume_from_sitk",
    "volume_to_sitk",
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
    subfolder: str = ""  # where it lies below the folder given ("" for that folder itself)

    def __str__(self) -> str:
        where = f", in {self.subfolder}" if self.subfolder else ""
        return f"{self.uid} ({self.modality or 'no modality'}, {self.description or 'no description'!r}, " \
               f"{len(self.files)} slices{where})"


def _dicom_tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _header_reader(file_name: str) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(file_name)
    reader.ReadImageInformation()
    return reader


# A PACS export (DICOMDIR beside DICOM/PA*/ST*/SE*/IM*) nests its series a few folders deep; searching below
# the folder given stops after this many folders, so that pointing at a disk's root fails soon, not never.
MAX_DICOM_FOLDERS = 500


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """Every series in a DICOM folder with its modality (0008,0060) and description (0008,103E).

    Where the folder itself holds none, its sub-folders are searched (a PACS
    export's ``DICOM/PA*/ST*/SE*`` layout, file names without extension), and
    each series records the sub-folder it lies in.

    Raises:
        InputError: the folder has more than ``MAX_DICOM_FOLDERS`` sub-folders and none held a series.
    """
    folder = Path(folder)
    series = _series_in(folder, folder)
    if series:
        return series
    searched = 0
    for here, subfolders, files in os.walk(folder):  # symlinked folders are not followed
        subfolders.sort()
        if Path(here) == folder or not files:
            continue
        searched += 1
        if searched > MAX_DICOM_FOLDERS:
            raise InputError(f"{folder} holds no DICOM series in its first {MAX_DICOM_FOLDERS} sub-folders; "
                             "give the folder of the series itself")
        series.extend(_series_in(Path(here), folder))
    return series


def _series_in(here: Path, root: Path) -> list[DicomSeries]:
    """The series GDCM finds in the folder ``here`` (not below it); ``root`` is the folder the user gave."""
    series = []
    subfolder = "" if here == root else here.relative_to(root).as_posix()
    with _scannable(here) as scanned:
        for uid in sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(scanned)) or []:
            found = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(scanned), uid)
            files = tuple(str(here / Path(name).name) for name in found)
            first = _header_reader(files[0])
            series.append(DicomSeries(uid, _dicom_tag(first, "0008|0060").upper(), _dicom_tag(first, "0008|103e"),
                                      files, subfolder))
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


class _SliceGeometry(NamedTuple):
    """Where a series' slices lie: each file's position (0020,0032) in file order, and the slice normal."""

    positions: np.ndarray  # (slices, 3), LPS mm
    normal: np.ndarray


def _slice_geometry(series: DicomSeries) -> _SliceGeometry | None:
    """The slices' positions and normal from their headers; None where a slice lacks them."""
    positions, normal = [], None
    for file_name in series.files:
        reader = _header_reader(file_name)
        try:
            positions.append([float(v) for v in _dicom_tag(reader, "0020|0032").split("\\")])
            cosines = np.array([float(v) for v in _dicom_tag(reader, "0020|0037").split("\\")])
        except ValueError:
            return None  # no positions to judge by: ITK reads the slices in file order
        if normal is None:
            normal = np.cross(cosines[:3], cosines[3:])
    if len(positions) < 2 or normal is None or np.array(positions).shape[1:] != (3,):
        return None
    return _SliceGeometry(np.array(positions), normal / np.linalg.norm(normal))


def _check_slice_steps(series: DicomSeries, geometry: _SliceGeometry) -> None:
    """Refuse a series whose slices are not evenly spaced (a missing slice would stretch the volume)."""
    steps = np.diff(np.sort(geometry.positions @ geometry.normal))
    if len(steps) < 2:
        return
    typical = float(np.median(steps))
    if typical <= 0 or np.any(np.abs(steps - typical) > SLICE_STEP_TOLERANCE * typical):
        raise InputError(f"the slices of series {series.uid} are unevenly spaced ({steps.min():.2f} to "
                         f"{steps.max():.2f} mm, typically {typical:.2f} mm): a slice is missing or doubled; "
                         "complete the series or resample it to even spacing first")


# A series whose slices shift sideways (gantry tilt) by less than this share of a pixel over its whole length
# is read as it is; beyond, ITK's reading (slices stacked along their normal) would misplace anatomy.
MAX_UNCORRECTED_SHIFT_PIXELS = 0.25


def _untilted(image: sitk.Image, geometry: _SliceGeometry, kind: VolumeKind) -> tuple[sitk.Image, float]:
    """A series read by ITK, resampled onto an orthogonal grid if its slices are sheared (gantry tilt).

    ITK stacks the slices along their normal; with a tilted gantry each slice
    lies shifted along the table instead. The true grid has the slice step
    (from the first to the last file's position) as its third axis; the image is
    resampled from it onto the grid of the slices' own axes, covering it
    (linear, nearest for labels; new corners get the series' lowest value).

    Returns:
        The image and the tilt in degrees (0 where none was corrected).
    """
    positions = geometry.positions
    step = (positions[-1] - positions[0]) / (len(positions) - 1)
    along = float(step @ geometry.normal)
    sideways = step - along * geometry.normal
    in_plane = image.GetSpacing()[:2]
    if along == 0 or np.linalg.norm(sideways) * (len(positions) - 1) <= MAX_UNCORRECTED_SHIFT_PIXELS * min(in_plane):
        return image, 0.0
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    sheared = sitk.Image(image)
    sheared.SetOrigin(tuple(float(x) for x in positions[0]))
    sheared.SetSpacing((*in_plane, float(np.linalg.norm(step))))
    sheared.SetDirection(tuple(np.column_stack([direction[:, 0], direction[:, 1],
                                                step / np.linalg.norm(step)]).ravel()))
    axes = np.column_stack([direction[:, 0], direction[:, 1], np.sign(along) * geometry.normal])
    size = np.array(image.GetSize())
    corners = np.array(np.meshgrid(*[[0, n - 1] for n in size], indexing="ij")).reshape(3, -1).T
    points = np.array([sheared.TransformContinuousIndexToPhysicalPoint(c.tolist()) for c in corners.astype(float)])
    spacing = np.array([*in_plane, abs(along)])
    low, high = (points @ axes).min(axis=0), (points @ axes).max(axis=0)
    reference = sitk.Image([int(n) for n in np.round((high - low) / spacing) + 1], image.GetPixelID())
    reference.SetSpacing(tuple(float(s) for s in spacing))
    reference.SetDirection(tuple(axes.ravel()))
    reference.SetOrigin(tuple(float(x) for x in axes @ low))
    interpolator = sitk.sitkNearestNeighbor if kind is VolumeKind.LABEL else sitk.sitkLinear
    lowest = float(sitk.GetArrayViewFromImage(image).min())
    tilt = float(np.degrees(np.arctan2(np.linalg.norm(sideways), abs(along))))
    return sitk.Resample(sheared, reference, sitk.Transform(), interpolator, lowest), tilt


def _read_dicom_folder(folder: Path, modality: str | None, series_uid: str | None,
                       kind: VolumeKind) -> tuple[sitk.Image, list[str]]:
    found = list_dicom_series(folder)
    if not found:
        raise InputError(f"{folder} is a folder but holds no DICOM series (nor do its sub-folders)")
    chosen = choose_dicom_series(folder, found, modality, series_uid)
    if chosen.subfolder:
        log.info("reading series %s from %s", chosen.uid, folder / chosen.subfolder)
    geometry = _slice_geometry(chosen)
    if geometry is not None:
        _check_slice_steps(chosen, geometry)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(list(chosen.files))
    image = reader.Execute()
    if geometry is None:
        return image, []
    image, tilt = _untilted(image, geometry, kind)
    if not tilt:
        return image, []
    return image, [f"series {chosen.uid} was scanned with a gantry tilt of {tilt:.1f} degrees (its slices are "
                   "sheared): it was resampled onto an orthogonal grid, so the outputs lie on that grid, not on "
                   "the slices"]


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
    _check_qform_sform(path, header, order, dims[1:4], pixdim)
    voxels = int(np.prod([max(int(d), 1) for d in dims[1 : ndim + 1]]))
    float_type = _NIFTI_FLOAT_TYPES.get(datatype)
    dtype = np.dtype(order + float_type) if float_type else None
    return _NiftiLayout(data_offset, voxels * _NIFTI_BYTES_PER_TYPE.get(datatype, 1), dtype)


# A NIfTI file's two placements (qform, sform) may differ by rounding; beyond this (mm, at any corner of the
# image) they place the anatomy in different places.
MAX_QFORM_SFORM_MM = 1.0


def _check_qform_sform(path: Path, header: bytes, order: str, shape: Sequence[int], pixdim: Sequence[float]) -> None:
    """Refuse a NIfTI-1 file whose qform and sform (both set) place the image differently.

    ITK takes the sform and says nothing; nibabel, FSL and Slicer do not all
    agree. Which placement the writer meant cannot be told from the file, and
    the wrong one moves or mirrors the whole result.
    """
    qform_code, sform_code = struct.unpack(order + "2h", header[252:256])
    if qform_code <= 0 or sform_code <= 0:
        return
    b, c, d, *offset = struct.unpack(order + "6f", header[256:280])
    a = np.sqrt(max(1.0 - (b * b + c * c + d * d), 0.0))
    rotation = np.array([[a * a + b * b - c * c - d * d, 2 * (b * c - a * d), 2 * (b * d + a * c)],
                         [2 * (b * c + a * d), a * a + c * c - b * b - d * d, 2 * (c * d - a * b)],
                         [2 * (b * d - a * c), 2 * (c * d + a * b), a * a + d * d - c * c - b * b]])
    qfac = -1.0 if pixdim[0] < 0 else 1.0
    qform = np.eye(4)
    qform[:3, :3] = rotation @ np.diag([pixdim[1], pixdim[2], qfac * pixdim[3]])
    qform[:3, 3] = offset
    sform = np.eye(4)
    sform[:3] = np.array(struct.unpack(order + "12f", header[280:328])).reshape(3, 4)
    corners = np.array(np.meshgrid(*[[0, max(int(n), 1) - 1] for n in shape], [1], indexing="ij")).reshape(4, -1)
    apart = float(np.linalg.norm((qform - sform) @ corners, axis=0).max())
    if apart <= MAX_QFORM_SFORM_MM:
        return
    mirrored = np.sign(np.linalg.det(qform[:3, :3])) != np.sign(np.linalg.det(sform[:3, :3]))
    raise InputError(f"{path} holds two placements that disagree: its qform and sform lie up to {apart:.0f} mm "
                     f"apart{' and one is mirrored' if mirrored else ''}. Readers differ in which they take (ITK "
                     "the sform), and which the writer meant cannot be told; keep the right one and set the other's "
                     "code to 0 (qform_code or sform_code), or export the image again")


def read_volume(path: str | os.PathLike, kind: VolumeKind = VolumeKind.INTENSITY, *,
                modality: str | None = None, series: str | None = None) -> Volume:
    """Read a 3D image file or DICOM folder and check that it can be used; see :func:`read_input`."""
    return read_input(path, kind, modality=modality, series=series)[0]


def read_input(path: str | os.PathLike, kind: VolumeKind = VolumeKind.INTENSITY, *,
               modality: str | None = None, series: str | None = None) -> tuple[Volume, list[str]]:
    """Read a 3D image file or DICOM folder, check that it can be used, and say what was corrected on the way.

    Args:
        path: an image file or a DICOM folder (its series may lie in sub-folders, as in a PACS export).
        kind: intensities or labels.
        modality: for a DICOM folder, the modality (0008,0060) of the scan to take, e.g. "CT" or "MR".
        series: for a DICOM folder, the series to take (as :func:`list_dicom_series` names it).

    Returns:
        The volume, and warnings (also logged) about corrections made while reading: a DICOM series
        scanned with a gantry tilt is resampled onto an orthogonal grid.

    Raises:
        InputError: the path is missing, a device, pipe or socket, not an image, not 3D, empty, has
            non-positive spacing or non-finite voxels; a NIfTI file whose qform and sform disagree; a DICOM
            folder whose series to take is ambiguous, or whose slices are unevenly spaced.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(f"input not found: {path}")
    warnings: list[str] = []
    try:
        if path.is_dir():
            image, warnings = _read_dicom_folder(path, modality, series, kind)
        else:
            special = _special_file(path)
            if special:
                raise InputError(f"{path} is {special}, not an image file; give a NIfTI, NRRD or MHA file or a "
                                 "DICOM folder")
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
    for warning in warnings:
        log.warning("%s", warning)
    return volume, warnings


def _special_file(path: Path) -> str:
    """What a path that is neither a file nor a folder is ("a named pipe (FIFO)", ...); "" for a regular file.

    Such a path reports size 0 (``/dev/zero``) or blocks when read (a FIFO), so it is named before it is opened.
    """
    mode = path.stat().st_mode
    for test, name in ((stat.S_ISCHR, "a character device (like /dev/zero)"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a named pipe (FIFO)"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return ""


# ITK reports a failed write as a RuntimeError without its cause; with less than this free beside the file,
# the cause was a full disk.
FULL_DISK_BYTES = 1 << 20


def write_volume(volume: Volume, path: str | os.PathLike) -> None:
    """Write a volume atomically (the file appears complete or not at all).

    Raises:
        OSError: ENOSPC when the disk is full (ITK's own error does not say so).
    """
    path = Path(path)
    with atomic_path(path) as temporary:
        try:
            sitk.WriteImage(volume_to_sitk(volume), str(temporary), useCompression=True)
        except RuntimeError:
            if shutil.disk_usage(path.parent).free < FULL_DISK_BYTES:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise
