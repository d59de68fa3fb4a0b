"""What a finished run found, read back from the JSON it wrote: for the command line's closing lines and the
Slicer panel alike.

Everything comes from ``vertebrae.json`` / ``discs.json`` (names, how they were
fixed, warnings, the model) and from the model's card (the caveat), never from
the running code, so what a user reads is what the files say.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from . import tasks
from .errors import ModelError
from .model_store import find_model, read_card

__all__ = ["RunSummary", "model_caveat"]


def model_caveat(model: str | os.PathLike | None, task: tasks.TaskSpec | str) -> str:
    """The caveat of a model's card ("" when the model has no card, or cannot be found)."""
    try:
        card = read_card(find_model(model, task))
    except ModelError:
        return ""
    return card.caveat if card is not None else ""


def _span(names: list[str]) -> str:
    return "" if not names else names[0] if len(names) == 1 else f"{names[0]}-{names[-1]}"


@dataclass(frozen=True)
class RunSummary:
    """One run's findings.

    Attributes:
        task: which task ran (its name).
        names: the vertebrae or discs found, head to foot, as named in the output.
        naming: how the names were fixed ("named by the sacrum", "unanchored: ..."), from the output.
        anchored: whether an anatomical anchor fixed the names.
        warnings: the warnings the output records.
        model: the model's name, as the output records it.
        caveat: the model card's caveat ("" for a model without a card).
        folder: the output folder.
        outputs: the files written, by name.
    """

    task: str
    names: list[str]
    naming: str
    anchored: bool
    warnings: list[str] = field(default_factory=list)
    model: str = ""
    caveat: str = ""
    folder: str = ""
    outputs: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_folder(cls, task: tasks.TaskSpec | str, folder: str | os.PathLike) -> "RunSummary":
        """Read ``TASK.json`` in ``folder`` (and the card of the model it names)."""
        spec = tasks.get(task)
        folder = Path(folder)
        document = json.loads((folder / f"{spec.name}.json").read_text())
        items = document.get(spec.name, [])
        names = [str(item.get("name") or item.get("label")) for item in items]  # older discs.json: "label"
        phrase, anchored = spec.load("result_type").naming_summary(document.get("naming") or {})
        model = str((document.get("model") or {}).get("name", ""))
        outputs = {path.name: str(path) for path in sorted(folder.iterdir()) if path.name.startswith(spec.name)}
        return cls(spec.name, names, phrase, anchored, [str(w) for w in document.get("warnings", [])], model,
                   model_caveat(model or None, spec), str(folder), outputs)

    @property
    def found(self) -> str:
        """"6 vertebrae (T10-L3)", "no discs"."""
        one, many = tasks.get(self.task).items
        if not self.names:
            return f"no {many}"
        return f"{len(self.names)} {one if len(self.names) == 1 else many} ({_span(self.names)})"

    def headline(self) -> str:
        """One line: what was found and how it was named."""
        return f"{self.found}, {self.naming}"

    def lines(self) -> list[str]:
        """The closing summary of a run: found, naming, warnings, the model's caveat, the files."""
        lines = [f"found: {self.found}", f"naming: {self.naming}"]
        lines += [f"warning: {warning}" for warning in self.warnings] or ["warnings: none"]
        if self.caveat:
            lines.append(f"model {self.model}: {self.caveat}")
        lines.append(f"files: {', '.join(self.outputs)} in {self.folder}")
        return lines
