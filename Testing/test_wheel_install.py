"""A non-editable install finds and runs its bundled models.

The wheel is built from a copy of the package sources, installed without
dependencies into a fresh virtual environment that borrows the heavy
dependencies (torch, numpy, ...) from this environment's site-packages
through a ``.pth`` file, and its ``spineseg`` command then segments a small
CT phantom and labels the discs of a small MRI phantom with the bundled
models. Before the models were package data, the wheel held none and both
commands failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

from spineseg import tasks
from spineseg.io import write_volume
from spineseg.labels import DISC_NUMBERS, disc_name
from spineseg.model_store import BUNDLED_MODELS_DIR
from spineseg.phantoms.ct import make_ct_phantom
from spineseg.phantoms.mri import make_mri_phantom

ROOT = Path(__file__).resolve().parents[1]


def run(command: list, **options) -> subprocess.CompletedProcess:
    environment = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, env=environment, **options)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin folder of a fresh venv holding the wheel (built from a copy, so the checkout stays clean)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(ROOT / "SpineSegExtension" / "spineseg", source / "SpineSegExtension" / "spineseg",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    shutil.copy(ROOT / "pyproject.toml", source)
    run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", ".", "-w", work / "dist"],
        cwd=source, timeout=120)  # fmt: skip
    (wheel,) = (work / "dist").glob("spineseg-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for model in (spec.default_model for spec in tasks.specs()):
        assert f"spineseg/models/{model}.safetensors" in names and f"spineseg/models/{model}.json" in names

    environment = work / "venv"
    venv.EnvBuilder(with_pip=False).create(environment)
    python = environment / "bin" / "python"
    site = run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip()
    (Path(site) / "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel], timeout=120)
    return environment / "bin"


@pytest.mark.skipif(os.name == "nt", reason="venv layout differs on Windows")
def test_wheel_install_runs_both_tasks_with_the_bundled_models(installed, tmp_path):
    located = run([installed / "python", "-c", "import spineseg.model_store as m; print(m.BUNDLED_MODELS_DIR)"])
    models = Path(located.stdout.strip())
    assert models.is_dir() and models != BUNDLED_MODELS_DIR  # the installed copy, not the checkout's
    assert str(installed.parent) in str(models)

    ct = tmp_path / "ct.nii.gz"
    write_volume(make_ct_phantom([20, 21], spacing=(2.0, 2.0, 2.0)).image, ct)
    run([installed / "spineseg", "vertebrae", ct, "-o", tmp_path / "vertebrae", "--device", "cpu"], timeout=300)
    table = json.loads((tmp_path / "vertebrae" / "vertebrae.json").read_text())
    assert [v["name"] for v in table["vertebrae"]]  # vertebrae were found with the bundled model

    mri = tmp_path / "mri.nii.gz"
    write_volume(make_mri_phantom([20, 21, 22], spacing=(4.0, 2.0, 2.0)).image, mri)
    run([installed / "spineseg", "discs", mri, "-o", tmp_path / "discs", "--device", "cpu"], timeout=300)
    discs = json.loads((tmp_path / "discs" / "discs.json").read_text())["discs"]
    assert discs and {d["name"] for d in discs} <= {disc_name(n) for n in DISC_NUMBERS}
