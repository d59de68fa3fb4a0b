"""Model cards as users meet them: each bundled model lists with a one-line summary and a caveat read from its
card, and every model whose weights were trained with VerSe shapes gives the CC BY-SA attribution."""

from __future__ import annotations

import json

import pytest

from spineseg import tasks
from spineseg.model_store import BUNDLED_MODELS_DIR, find_model, list_models, read_card


def bundled() -> list:
    return [entry for entry in list_models() if entry.manifest_path.parent == BUNDLED_MODELS_DIR]


def test_every_bundled_model_is_listed_with_a_summary_and_a_caveat_from_its_card():
    names = {p.stem for p in BUNDLED_MODELS_DIR.glob("*.safetensors")}
    assert {entry.name for entry in bundled()} == names
    for entry in bundled():
        card = read_card(entry)
        assert card is not None and card.summary and card.caveat, entry.name
        text = " ".join(card.path.read_text().replace("**", "").replace("`", "").split())
        assert card.caveat in text and card.summary in text  # read from the card, not written in code
    assert "not good enough on real scans" in read_card(find_model(tasks.get("vertebrae").default_model, "vertebrae")).caveat
    assert "real MRIs" in read_card(find_model(tasks.get("discs").default_model, "discs")).caveat


def trained_with_verse(name: str, task: str) -> bool:
    """Whether a bundled model's training, or that of a model it started from, used VerSe label maps."""
    training = find_model(name, task).manifest.get("training") or {}
    if "verse" in json.dumps(training.get("config", {}).get("data", {})).lower():
        return True
    start = training.get("initial_weights")
    start = start.get("model") if isinstance(start, dict) else None
    return bool(start) and start != name and (BUNDLED_MODELS_DIR / f"{start}.json").is_file() and \
        trained_with_verse(start, task)


@pytest.mark.parametrize("entry", bundled(), ids=lambda entry: entry.name)
def test_cards_of_weights_trained_with_verse_shapes_give_the_cc_by_sa_attribution(entry):
    text = read_card(entry).path.read_text()
    if trained_with_verse(entry.name, entry.task):
        assert "## Data attribution (VerSe, CC BY-SA 4.0)" in text
        assert "creativecommons.org/licenses/by-sa/4.0" in text and "Sekuboyina" in text
    else:
        assert "Data attribution (VerSe" not in text


def test_the_vertebra_models_trained_with_verse_are_the_synth_ones():
    assert sorted(e.name for e in bundled() if trained_with_verse(e.name, e.task)) == [
        "vertebrae-ct-synth-v5", "vertebrae-ct-synth-v6", "vertebrae-ct-synth-v7"]
