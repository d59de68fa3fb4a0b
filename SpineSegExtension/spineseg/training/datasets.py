"""Training data sets: find the image/label files of each layout, split them by subject.

Layouts (the folder given to ``--data``):

* ``verse`` (vertebrae): ``rawdata/**/SUBJECT*_ct.nii.gz`` with
  ``derivatives/**/SAME-NAME_seg-vert_msk.nii.gz`` (VerSe numbering);
* ``pairs`` (either task): ``images/NAME.ext`` with ``labels/NAME.ext`` or
  ``labels/NAME_label.ext`` (also ``_labels``, ``_seg``, ``_mask``), as in
  CSI2014; vertebra label maps in VerSe numbering, or disc point labels;
* ``bids`` (discs, spine-generic): ``sub-*/anat/*_T1w.nii.gz`` / ``*_T2w.nii.gz``
  with ``derivatives/labels/sub-*/anat/SAME-NAME_labels-disc*.nii.gz``, point
  labels in Spinal Cord Toolbox numbering (a voxel of value n marks disc n);
  images without disc labels are skipped;
* ``phantoms``: generated, no folder; real labelled CTs may join them
  (``data.real_cases``: folders of the layouts above or ``IMAGE,LABELS`` pairs),
  all on the training side.

Readers only look at file names; file contents are checked when the task
loads them. Every problem is one :class:`InputError` naming the folder or
files and what to do.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError
from ..publish import atomic_path
from .config import DataConfig, Layout, Task

__all__ = ["Subject", "DataSplit", "read_verse", "read_pairs", "read_bids_discs", "phantom_subjects",
           "read_real_cases",            "detect_layout", "read_dataset", "split_subjects", "save_split", "check_split"]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
LABEL_TAGS = ("", "_label", "_labels", "_seg", "_mask")
_SHOWN = 5  # file names listed in an error message


@dataclass(frozen=True)
class Subject:
    """One training case. Cases of the same ``subject`` always fall on the same side of the split."""

    subject: str
    case: str
    image: Path | None = None  # None for phantoms
    labels: Path | None = None
    contrast: str = ""  # discs: T1w or T2w where known

    def to_dict(self) -> dict:
        return {key: (str(value) if isinstance(value, Path) else value) for key, value in asdict(self).items()}


@dataclass(frozen=True)
class DataSplit:
    """Training and validation cases of a run, and the layout they came from."""

    layout: Layout
    train: list[Subject]
    validation: list[Subject]

    def to_dict(self) -> dict:
        return {"layout": self.layout.value, "train": [s.to_dict() for s in self.train],
                "validation": [s.to_dict() for s in self.validation]}


def _strip_suffix(name: str) -> str | None:
    for suffix in IMAGE_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOWN])
    return shown + (f" and {len(names) - _SHOWN} more" if len(names) > _SHOWN else "")


def _require_folder(path: Path, what: str, layout_help: str) -> None:
    if not path.is_dir():
        raise InputError(f"{path} is missing: {what}. Expected {layout_help}")


def _require_pairing(root: Path, missing: str, orphans: str, advice: str = "") -> None:
    """Raise one error naming unpaired images (``missing``) and unpaired labels (``orphans``) (empty string: none)."""
    problems = [text for text in (missing, orphans) if text]
    if problems:
        raise InputError(f"{root} is inconsistent: " + "; ".join(problems) + advice)


_VERSE_HELP = "DIR/rawdata/sub-*/..._ct.nii.gz and DIR/derivatives/sub-*/..._seg-vert_msk.nii.gz (VerSe layout)"
_PAIRS_HELP = "DIR/images/NAME.nii.gz and DIR/labels/NAME.nii.gz or NAME_label.nii.gz (images/labels layout)"
_BIDS_HELP = ("DIR/sub-*/anat/sub-*_T2w.nii.gz (or _T1w) and "
              "DIR/derivatives/labels/sub-*/anat/sub-*_T2w_labels-disc*.nii.gz (BIDS spine-generic layout)")


def read_verse(root: str | Path) -> list[Subject]:
    """CTs and vertebra masks of a VerSe-style folder, matched by name."""
    root = Path(root)
    _require_folder(root / "rawdata", "no rawdata folder with the CTs", _VERSE_HELP)
    _require_folder(root / "derivatives", "no derivatives folder with the masks", _VERSE_HELP)
    images = {path.name[: -len("_ct.nii.gz")]: path for path in sorted((root / "rawdata").rglob("*_ct.nii.gz"))}
    masks = {path.name[: -len("_seg-vert_msk.nii.gz")]: path
             for path in sorted((root / "derivatives").rglob("*_seg-vert_msk.nii.gz"))}
    if not images:
        raise InputError(f"no CT found in {root / 'rawdata'}: expected files named *_ct.nii.gz")
    missing = sorted(set(images) - set(masks))
    orphans = sorted(set(masks) - set(images))
    _require_pairing(
        root,
        f"{len(missing)} CT(s) without a mask in {root / 'derivatives'} "
        f"({_listing([name + '_seg-vert_msk.nii.gz' for name in missing])})" if missing else "",
        f"{len(orphans)} mask(s) without a CT in {root / 'rawdata'} "
        f"({_listing([name + '_ct.nii.gz' for name in orphans])})" if orphans else "",
        ". Add or remove files so they pair up",
    )
    return [Subject(name.split("_")[0], name, images[name], masks[name]) for name in images]


def read_pairs(root: str | Path) -> list[Subject]:
    """Images and label maps of an ``images/`` + ``labels/`` folder pair, matched by file name."""
    root = Path(root)
    _require_folder(root / "images", "no images folder", _PAIRS_HELP)
    _require_folder(root / "labels", "no labels folder", _PAIRS_HELP)
    images = {stem: path for path in sorted((root / "images").iterdir()) if (stem := _strip_suffix(path.name))}
    labels = {stem: path for path in sorted((root / "labels").iterdir()) if (stem := _strip_suffix(path.name))}
    if not images:
        raise InputError(f"no image found in {root / 'images'}: expected files ending in {', '.join(IMAGE_SUFFIXES)}")
    subjects, missing, used = [], [], set()
    for stem, image in images.items():
        found = [stem + tag for tag in LABEL_TAGS if stem + tag in labels]
        if len(found) > 1:
            raise InputError(f"{image.name} has several label files in {root / 'labels'}: "
                             f"{', '.join(labels[name].name for name in found)}; keep one")
        if not found:
            missing.append(image.name)
            continue
        used.add(found[0])
        subjects.append(Subject(stem, stem, image, labels[found[0]]))
    orphans = sorted(labels[name].name for name in set(labels) - used)
    _require_pairing(
        root,
        f"{len(missing)} image(s) without a label file ({_listing(missing)}; "
        f"expected labels/NAME.nii.gz or labels/NAME_label.nii.gz)" if missing else "",
        f"{len(orphans)} label file(s) without an image ({_listing(orphans)})" if orphans else "",
    )
    return subjects


def read_bids_discs(root: str | Path) -> list[Subject]:
    """T1w/T2w images with disc point labels of a BIDS (spine-generic) folder."""
    root = Path(root)
    labels_root = root / "derivatives" / "labels"
    _require_folder(labels_root, "no derivatives/labels folder with the disc labels", _BIDS_HELP)
    images = sorted(p for p in root.glob("sub-*/anat/*.nii.gz") if p.name.endswith(("_T1w.nii.gz", "_T2w.nii.gz")))
    if not images:
        raise InputError(f"no T1w or T2w image found in {root}: expected {_BIDS_HELP}")
    by_name = {path.name[: -len(".nii.gz")]: path for path in images}
    label_files: dict[str, list[Path]] = {}
    orphans = []
    for path in sorted(labels_root.glob("sub-*/anat/*_labels-disc*.nii.gz")):
        stem = path.name.split("_labels-disc")[0]
        if stem in by_name:
            label_files.setdefault(stem, []).append(path)
        else:
            orphans.append(path.name)
    if orphans:
        raise InputError(f"{len(orphans)} disc label file(s) in {labels_root} without their image "
                         f"({_listing(orphans)}); each must be named after an image in sub-*/anat/")
    subjects = []
    for stem, image in by_name.items():
        found = label_files.get(stem, [])
        if len(found) > 1:
            raise InputError(f"{image.name} has several disc label files: {', '.join(p.name for p in found)}; keep one")
        if found:
            subjects.append(Subject(stem.split("_")[0], stem, image, found[0], stem.rsplit("_", 1)[1]))
    if not subjects:
        raise InputError(f"none of the {len(images)} images in {root} has disc labels in {labels_root}: "
                         f"expected {_BIDS_HELP}")
    if len(subjects) < len(images):
        log.info("%d of %d images have no disc labels and are skipped", len(images) - len(subjects), len(images))
    return subjects


def phantom_subjects(count: int, group: str) -> list[Subject]:
    """Names for generated phantoms (``group`` is "train" or "validation")."""
    return [Subject(f"phantom-{group}-{index:04d}", f"phantom-{group}-{index:04d}") for index in range(count)]


def read_real_cases(entries: list[str]) -> list[Subject]:
    """The real CTs of ``data.real_cases``: each entry a data folder (VerSe or images/labels layout) or a pair
    ``IMAGE,LABELS`` of files."""
    subjects = []
    for entry in entries:
        image, separator, labels = entry.partition(",")
        if separator:
            paths = [Path(image.strip()).resolve(), Path(labels.strip()).resolve()]
            for path in paths:
                if not path.is_file():
                    raise InputError(f"data.real_cases: {path} not found (an entry IMAGE,LABELS names two files)")
            stem = _strip_suffix(paths[0].name) or paths[0].name
            subjects.append(Subject(stem, stem, paths[0], paths[1]))
            continue
        root = Path(entry).resolve()
        if not root.is_dir():
            raise InputError(f"data.real_cases: {root} is neither a data folder nor a pair IMAGE,LABELS of files")
        reader = read_pairs if detect_layout(root, Task.VERTEBRAE) is Layout.PAIRS else read_verse
        subjects += reader(root)
    return subjects


def detect_layout(root: Path, task: Task) -> Layout:
    """The layout of a data folder, from the folders it holds."""
    if (root / "images").is_dir() and (root / "labels").is_dir():
        return Layout.PAIRS
    if task is Task.VERTEBRAE and (root / "rawdata").is_dir():
        return Layout.VERSE
    if task is Task.DISCS and any(root.glob("sub-*/anat")):
        return Layout.BIDS
    layouts = {Task.VERTEBRAE: _VERSE_HELP + ", or " + _PAIRS_HELP, Task.DISCS: _BIDS_HELP + ", or " + _PAIRS_HELP}
    raise InputError(f"cannot tell the layout of {root}: expected {layouts[task]}; or pass --data phantoms")


def read_dataset(task: Task, data: DataConfig, seed: int) -> DataSplit:
    """Find the cases of ``data.path`` (or name the phantoms) and split them by subject."""
    if data.path == "phantoms" or data.layout is Layout.PHANTOMS:
        return DataSplit(Layout.PHANTOMS, phantom_subjects(data.phantoms, "train") + read_real_cases(data.real_cases),
                         phantom_subjects(data.validation_phantoms, "validation"))
    root = Path(data.path).resolve()
    if not root.is_dir():
        raise InputError(f"data folder not found: {root}")
    layout = detect_layout(root, task) if data.layout is Layout.AUTO else data.layout
    readers = {Layout.VERSE: read_verse, Layout.PAIRS: read_pairs, Layout.BIDS: read_bids_discs}
    subjects = readers[layout](root)
    train, validation = split_subjects(subjects, data.validation_fraction, seed)
    return DataSplit(layout, train, validation)


def split_subjects(cases: list[Subject], validation_fraction: float, seed: int) -> tuple[list[Subject], list[Subject]]:
    """Random split by subject: every case of a subject is on one side, at least one subject each side; with a
    single subject, no validation (a warning says so)."""
    names = sorted({case.subject for case in cases})
    if validation_fraction <= 0:
        return list(cases), []
    if len(names) < 2:
        # Fine-tuning on one labelled CT is a common first use: train on it rather than refuse, and say so.
        log.warning("only %d subject in the data: no validation split, the last weights will be exported "
                       "(set data.validation_fraction=0 to say so, or add subjects)", len(names))
        return list(cases), []
    count = min(max(1, round(validation_fraction * len(names))), len(names) - 1)
    chosen = set(np.random.default_rng(seed).permutation(names)[:count].tolist())
    return [c for c in cases if c.subject not in chosen], [c for c in cases if c.subject in chosen]


def save_split(split: DataSplit, path: str | Path) -> None:
    """Record the split (one line per case) in the run folder."""
    with atomic_path(path) as temporary:
        temporary.write_text(json.dumps(split.to_dict(), indent=1) + "\n")


def check_split(split: DataSplit, path: str | Path) -> None:
    """On resume: the data must split exactly as when the run started."""
    recorded = json.loads(Path(path).read_text())
    if recorded != split.to_dict():
        raise InputError(f"the data differ from those recorded in {path} when the run started; "
                         "resume with the same data, or start a new run folder")
