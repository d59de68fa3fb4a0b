"""Shared test helpers: real-data location and small volumes with awkward geometry."""

from __future__ import annotations

import locale
from pathlib import Path

import numpy as np
import pytest

from spineseg.volume import Volume, VolumeKind, affine_from_geometry

REAL_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"


@pytest.fixture(autouse=True)
def locale_kept():
    """Put back the locale after each test: GDCM's DICOM reader and writer set the C locale, after which later
    tests would decode subprocess output (tqdm bars) as ASCII."""
    saved = locale.setlocale(locale.LC_CTYPE)
    yield
    locale.setlocale(locale.LC_CTYPE, saved)


def rotation(axis: int, degrees: float) -> np.ndarray:
    """3x3 rotation about RAS axis ``axis``."""
    angle = np.deg2rad(degrees)
    c, s = np.cos(angle), np.sin(angle)
    i, j = [a for a in range(3) if a != axis]
    matrix = np.eye(3)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def awkward_affine(spacing=(0.8, 1.3, 2.5), origin=(12.5, -40.0, 230.0)) -> np.ndarray:
    """A rotated, flipped (left-handed), anisotropic IJK-to-RAS affine."""
    direction = rotation(2, 20.0) @ rotation(0, -10.0) @ np.diag([-1.0, 1.0, 1.0])[:, [1, 0, 2]]
    return affine_from_geometry(spacing, origin, direction)


@pytest.fixture(autouse=True)
def _private_case_cache(tmp_path_factory, monkeypatch):
    """Prepared training cases go to a temporary folder, never to the user's cache."""
    monkeypatch.setenv("SPINESEG_CACHE", str(tmp_path_factory.mktemp("spineseg-cache")))


@pytest.fixture
def awkward_volume() -> Volume:
    rng = np.random.default_rng(3)
    return Volume(rng.integers(-1000, 2000, (17, 23, 11)).astype(np.int16), awkward_affine())


def require_real_data(*parts: str) -> Path:
    path = REAL_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real data not available at {path} (it lives in ../shared/data/real beside the checkout)")
    return path


__all__ = ["REAL_DATA", "awkward_affine", "rotation", "require_real_data", "VolumeKind"]
