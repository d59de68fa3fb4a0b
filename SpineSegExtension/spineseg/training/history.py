"""The run's metrics: one CSV row per log interval, and PNG curves beside it."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from ..publish import atomic_path

__all__ = ["MetricsLog"]


class MetricsLog:
    """``metrics.csv`` with fixed columns; validation columns are empty where no validation ran."""

    def __init__(self, path: str | Path, loss_columns: list[str], validation_columns: list[str]) -> None:
        self.path = Path(path)
        self.loss_columns = ["loss", *loss_columns]
        self.validation_columns = [f"validation_{name}" for name in validation_columns]
        self.columns = ["iteration", "seconds", "learning_rate", *self.loss_columns, *self.validation_columns]
        self.rows: list[dict[str, float]] = []

    def resume(self, iteration: int) -> None:
        """Keep the rows up to ``iteration`` (the checkpoint's); later ones will be written again."""
        if self.path.exists():
            with open(self.path, newline="") as handle:
                self.rows = [{k: float(v) for k, v in row.items() if v != ""} for row in csv.DictReader(handle)]
        self.rows = [row for row in self.rows if row["iteration"] <= iteration]
        with atomic_path(self.path) as temporary, open(temporary, "w", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            writer.writeheader()
            writer.writerows({k: _text(v) for k, v in row.items()} for row in self.rows)

    def append(self, row: dict[str, float]) -> None:
        new = not self.path.exists()
        with open(self.path, "a", newline="") as handle:
            writer = csv.DictWriter(handle, self.columns)
            if new:
                writer.writeheader()
            writer.writerow({k: _text(v) for k, v in row.items()})
        self.rows.append(row)

    def plot(self, path: str | Path, title: str) -> None:
        """Training losses (log scale) and each validation metric against the iteration."""
        panels = [self.loss_columns, *[[name] for name in self.validation_columns]]
        columns = min(len(panels), 3)
        lines = math.ceil(len(panels) / columns)
        figure = Figure(figsize=(4.2 * columns, 3.2 * lines))
        FigureCanvasAgg(figure)
        figure.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.9, wspace=0.3, hspace=0.45)
        for index, names in enumerate(panels):
            axes = figure.add_subplot(lines, columns, index + 1)
            for name in names:
                points = [(row["iteration"], row[name]) for row in self.rows if name in row]
                if points:
                    axes.plot(*zip(*points), label=name, marker="." if len(points) < 30 else None)
            axes.set_xlabel("iteration")
            axes.set_title(names[0] if len(names) == 1 else "training loss")
            if index == 0:
                axes.set_yscale("log")
                axes.legend(fontsize="small")
            axes.grid(alpha=0.3)
        figure.suptitle(title)
        with atomic_path(path) as temporary:
            figure.savefig(temporary, dpi=90)


def _text(value: float) -> str:
    return f"{value:.6g}"
