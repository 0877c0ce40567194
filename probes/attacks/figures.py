"""Figures the attack suite draws: shown inline by a notebook with no pyplot set up, written
as PNG atomically."""

from __future__ import annotations

import io
import os

from matplotlib.figure import Figure

from codecut.core.io import atomic_file

DPI = 120


class InlineFigure(Figure):
    """A Figure a notebook shows by itself, with no pyplot or backend set up for it."""

    def _repr_png_(self) -> bytes:
        buffer = io.BytesIO()
        self.savefig(buffer, format="png", dpi=DPI)
        return buffer.getvalue()


def save(figure: Figure, path: str | os.PathLike) -> None:
    """Write `figure` to `path` as a PNG, atomically (temp file + rename)."""
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png", dpi=DPI)
