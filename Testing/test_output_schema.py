"""vertebrae.json and discs.json name the same things the same way, as docs/output-files.md says, and the
sacrum is "sacrum" in every output."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from spineseg.labels import SACRUM, vertebra_name
from spineseg.results import DiscNaming, DiscRecord, DiscsResult, NamingRecord, VertebraeResult, VertebraRecord
from spineseg.volume import Volume, VolumeKind, affine_from_geometry
from spineseg.writers import result_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "output-files.md"


def documented() -> dict[str, dict[str, set[str]]]:
    """The doc's tables: for each table (top, naming, entry), the keys each file has."""
    tables: dict[str, dict[str, set[str]]] = {}
    for title, body in zip(["top", "naming", "entry"],
                           re.findall(r"\| key \| vertebrae.json \| discs.json \| meaning \|\n\|[-|]+\|\n((?:\|.*\n)+)",
                                      DOC.read_text())):
        files = {"vertebrae": set(), "discs": set()}
        for row in body.strip().splitlines():
            cells = [cell.strip() for cell in row.strip("|").split("|")]
            for key in re.findall(r"`([a-z_]+)`", cells[0]):
                for file, cell in zip(("vertebrae", "discs"), cells[1:3]):
                    if cell == "yes":
                        files[file].add(key)
        tables[title] = files
    return tables


def documents() -> tuple[dict, dict]:
    labels = Volume(np.zeros((4, 4, 4), np.uint8), affine_from_geometry((1.0, 1.0, 1.0)), VolumeKind.LABEL)
    vertebrae = VertebraeResult(labels, [VertebraRecord(24, 10, 0.01, 0.9, (1.0, 2.0, 3.0)),
                                         VertebraRecord(SACRUM, 12, 0.012, 0.5, (1.0, 4.0, -30.0))],
                                ["a warning"], NamingRecord("sacrum", {"sacrum": vertebra_name(SACRUM)}))
    discs = DiscsResult([DiscRecord(25, (1.0, 3.0, -10.0), 0.8)], naming=DiscNaming("sacrum"))
    model = {"name": "m", "version": "1", "sha256": "0"}
    return result_table(vertebrae, "ct.nii.gz", model), result_table(discs, "mri.nii.gz", model)


def test_both_files_have_the_documented_keys_and_share_the_names_of_shared_things():
    tables = documented()
    assert set(tables) == {"top", "naming", "entry"}
    for file, document in zip(("vertebrae", "discs"), documents()):
        assert set(document) - {file} == tables["top"][file] - {"vertebrae", "discs"}, file
        assert set(document["naming"]) == tables["naming"][file], file
        assert set(document[file][0]) == tables["entry"][file], file
    vertebrae, discs = documents()
    shared = set(vertebrae["vertebrae"][0]) & set(discs["discs"][0])
    assert shared == {"name", "number", "position_ras"}
    assert set(vertebrae) - {"vertebrae", "spine_frame"} == set(discs) - {"discs"}
    assert set(discs["naming"]) <= set(vertebrae["naming"])


def test_the_sacrum_is_called_sacrum_in_the_files():
    vertebrae, _ = documents()
    assert [item["name"] for item in vertebrae["vertebrae"]] == ["L5", "sacrum"]
    assert vertebrae["vertebrae"][1]["number"] == SACRUM == 26
    assert vertebrae["naming"]["anchors_found"] == {"sacrum": "sacrum"}
