"""JSON and rich rendering shared by the metric result containers."""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from typing import Any

import numpy as np


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    if isinstance(obj, np.generic):
        return _clean(obj.item())
    return obj


class _Record:
    """JSON and rich rendering shared by the result containers."""

    _columns: tuple[str, ...] = ()
    title: str = ""

    def to_dict(self) -> dict[str, Any]:
        return _clean(asdict(self))  # type: ignore[call-overload]

    def to_json(self, path: str | None = None) -> str:
        """JSON text (NaN as null); also written to ``path`` if given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            from pathlib import Path

            Path(path).write_text(text)
        return text

    def _rows(self) -> list[Any]:
        return list(self.bins)  # type: ignore[attr-defined]

    def __rich__(self) -> Any:
        from rich.table import Table

        table = Table(title=self.title)
        for c in self._columns:
            table.add_column(c, justify="right")
        for row in self._rows():
            cells = []
            for c in self._columns:
                v = getattr(row, c)
                cells.append(f"{v:.4g}" if isinstance(v, float) else str(v))
            table.add_row(*cells)
        return table
