"""The Extensions Index catalog entry (SpineSeg.json), the licence and the CMake metadata agree.

The Index validates each entry against the schema its ``$schema`` names
(Slicer's ``Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json``) and
then checks the category, the repository URL, the CMake project name and the
licence file. The schema's rules are restated below as a JSON Schema of our
own (required keys, no other keys, their types, ``scm_type`` values, ``tier``
1-5) and run with ``jsonschema``, so the test needs no network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import urlsplit

import pytest

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "SpineSeg.json"
SCHEMA_URL = "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json"

CATALOG_ENTRY_SCHEMA = {
    "$schema": "http://json-schema.org/draft-07/schema",
    "type": "object",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"},
        "category": {"type": "string"},
        "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"},
        "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"},
        "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"},
        "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}


def schema_errors(entry: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(CATALOG_ENTRY_SCHEMA)
    return sorted(error.message for error in validator.iter_errors(entry))


def test_catalog_entry_is_valid_against_the_index_schema():
    entry = json.loads(ENTRY.read_text())
    assert schema_errors(entry) == []
    assert entry["$schema"].split("#")[0] == SCHEMA_URL


def test_schema_check_rejects_what_the_index_rejects():
    entry = json.loads(ENTRY.read_text())
    old_spelling = {**{k: v for k, v in entry.items() if k != "scm_url"}, "scmurl": entry["scm_url"]}
    assert any("scm_url" in message for message in schema_errors(old_spelling))
    assert any("scmurl" in message for message in schema_errors(old_spelling))
    assert schema_errors({**entry, "tier": 7})
    assert schema_errors({**entry, "build_dependencies": "PyTorch"})


def test_catalog_entry_matches_the_cmake_metadata_and_index_rules():
    entry = json.loads(ENTRY.read_text())
    cmake = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"^project\(\s*(\w+)", cmake, re.M).group(1) == ENTRY.stem  # the Index compares these
    assert entry["category"] == re.search(r'set\(EXTENSION_CATEGORY "([^"]+)"\)', cmake).group(1) == "Segmentation"
    assert entry["build_dependencies"] == re.search(r'set\(EXTENSION_DEPENDS "([^"]+)"\)', cmake).group(1).split()
    assert entry["build_dependencies"] == ["PyTorch"]
    url = urlsplit(entry["scm_url"])
    assert url.scheme == "https"
    assert "slicer" in Path(url.path).stem.lower()  # the Index asks for "Slicer" in the repository name
    homepage = re.search(r'set\(EXTENSION_HOMEPAGE "([^"#]+)', cmake).group(1)
    assert entry["scm_url"].removesuffix(".git") == homepage.rstrip("/")


def test_licence_file_is_the_apache_licence_pyproject_names():
    text = (ROOT / "LICENSE").read_text()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "TERMS AND CONDITIONS FOR USE, REPRODUCTION, AND DISTRIBUTION" in text
    assert 'license = { text = "Apache-2.0" }' in (ROOT / "pyproject.toml").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "[Apache License 2.0](LICENSE)" in readme
    assert "Extensions Manager" in readme
