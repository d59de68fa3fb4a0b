"""Glue between the SpineSeg core (``spineseg``) and Slicer's MRML scene.

Every function takes the scene and the logics it needs as arguments and never
reaches for ``slicer.mrmlScene``, so the glue runs in real Slicer and, for
tests and batch jobs, on the PyPI wheel ``slicer-core``. Nothing here imports
``qt`` or ``ctk``. Importing this package imports nothing: ``process`` and
``dependencies`` work without ``slicer`` at all; ``volumes``, ``segmentations``,
``markups``, ``scene``, ``terminology`` and ``logic`` (the module's logic without the GUI) import ``slicer`` MRML
classes; ``batch`` is the
windowless batch program (run as a file, see its docstring).
"""

from __future__ import annotations

__all__ = ["volumes", "segmentations", "markups", "scene", "process", "dependencies", "storage", "terminology", "batch",
           "logic"]
