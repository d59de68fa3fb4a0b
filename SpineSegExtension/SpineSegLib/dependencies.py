"""Python packages the core needs, installed the Slicer way after the user agrees.

Nothing is installed at import time. :func:`missing_requirements` is pure and
tested; :func:`install_missing` runs only inside Slicer: PyTorch comes from the
PyTorch extension's ``PyTorchUtils`` (it picks the CUDA/CPU build that fits the
machine), the rest from ``slicer.util.pip_install``. Packages Slicer ships
(numpy, SimpleITK, scipy, ...) are never reinstalled.
"""

from __future__ import annotations

import re
from importlib import metadata
from typing import Callable, Iterable

__all__ = [
    "CORE_REQUIREMENTS",
    "SHIPPED_WITH_SLICER",
    "requirement_name",
    "missing_requirements",
    "install_missing",
]

# What the core imports at run time (see pyproject.toml); torch is handled apart.
CORE_REQUIREMENTS: list[str] = ["torch>=2.0", "safetensors>=0.4", "slicerio>=1.1", "tqdm>=4.66", "scikit-image>=0.22"]

# Packages Slicer's own Python already has: installing them with pip could break Slicer.
SHIPPED_WITH_SLICER: frozenset[str] = frozenset(
    {"numpy", "simpleitk", "scipy", "vtk", "pydicom", "requests", "pillow", "matplotlib"}
)


def requirement_name(requirement: str) -> str:
    """Distribution name of a requirement string, normalised: 'SimpleITK>=2.3' -> 'simpleitk'."""
    match = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement)
    if not match:
        raise ValueError(f"not a requirement string: {requirement!r}")
    return re.sub(r"[-_.]+", "-", match.group(1)).lower()


def _installed(name: str) -> bool:
    try:
        metadata.version(name)
        return True
    except metadata.PackageNotFoundError:
        return False


def missing_requirements(
    requirements: Iterable[str] = CORE_REQUIREMENTS,
    is_installed: Callable[[str], bool] = _installed,
) -> list[str]:
    """Requirements whose distribution is not installed, leaving out those Slicer ships."""
    missing = []
    for requirement in requirements:
        name = requirement_name(requirement)
        if name in SHIPPED_WITH_SLICER:
            continue
        if not is_installed(name):
            missing.append(requirement)
    return missing


def install_missing(confirm: Callable[[str], bool]) -> bool:
    """Inside Slicer: ask once, then install what is missing. Returns True when all is present.

    Args:
        confirm: shows the question to the user and returns their answer
            (the widget passes ``slicer.util.confirmOkCancelDisplay``).

    Raises:
        RuntimeError: the PyTorch extension is not installed (PyTorch cannot be
            installed the Slicer way without it).
    """
    import slicer  # only inside Slicer

    missing = missing_requirements()
    if not missing:
        return True
    names = ", ".join(requirement_name(r) for r in missing)
    if not confirm(
        f"SpineSeg needs these Python packages, which are not installed yet: {names}.\n\n"
        "Install them now? This downloads several hundred MB and can take a few minutes."
    ):
        return False
    torch_wanted = [r for r in missing if requirement_name(r) == "torch"]
    if torch_wanted:
        try:
            import PyTorchUtils  # from the PyTorch extension
        except ImportError as error:
            raise RuntimeError(
                "SpineSeg needs the 'PyTorch' extension: install it from the Extensions Manager, restart Slicer and try again."
            ) from error
        torch_logic = PyTorchUtils.PyTorchUtilsLogic()
        if not torch_logic.torchInstalled():
            version = torch_wanted[0][len("torch"):] or None
            if torch_logic.installTorch(askConfirmation=False, torchVersionRequirement=version) is None:
                raise RuntimeError("PyTorch could not be installed; see the Python console for pip's messages")
    others = [r for r in missing if requirement_name(r) != "torch"]
    if others:
        slicer.util.pip_install(others)
    return True
