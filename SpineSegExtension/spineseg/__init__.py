"""SpineSeg core: vertebra segmentation in CT and disc labelling in MRI.

Pure Python (numpy, SimpleITK, PyTorch). Never imports slicer, qt, ctk or vtk,
so it runs from the command line, in tests and in a Slicer background process.

The public API is importable from here; each name is loaded on first use, so
``import spineseg`` costs nothing and torch is imported only when a task runs::

    from spineseg import read_volume, segment_vertebrae
    result = segment_vertebrae(read_volume("ct.nii.gz"))
"""

from __future__ import annotations

import importlib  # no typing: the console script (spineseg.entry) imports this package before its signal handlers

__version__ = "0.1.0"

# name -> module that defines it
_PUBLIC = {
    "Volume": "spineseg.volume",
    "VolumeKind": "spineseg.volume",
    "read_volume": "spineseg.io",
    "write_volume": "spineseg.io",
    "segment_vertebrae": "spineseg.vertebrae.pipeline",
    "label_discs": "spineseg.discs.pipeline",
    "run_vertebrae": "spineseg.jobs",
    "run_discs": "spineseg.jobs",
    "load_model": "spineseg.model_store",
    "Task": "spineseg.choices",
    "DeviceChoice": "spineseg.choices",
    "VertebraeResult": "spineseg.results",
    "DiscsResult": "spineseg.results",
}

__all__ = ["__version__", *_PUBLIC]


def __getattr__(name: str) -> object:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'spineseg' has no attribute {name!r}")
    value = getattr(importlib.import_module(_PUBLIC[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
