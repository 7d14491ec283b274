"""The one way benchmark results are written: JSON and Markdown, each file atomically.

``write_result(out, stem, report, markdown)`` writes ``out/<stem>.json`` and ``out/<stem>.md`` with
the project's one atomic writer, ``colorizer.atomic`` (a killed run leaves the previous table, never
half of one; standard library only, so the GPU check can use it before torch is imported);
``write_json`` / ``write_text`` write one file. JSON is strict: NaN and infinities become null, and
values JSON does not know (dtypes, paths, devices) are written as strings.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from colorizer import atomic


def json_ready(value):
    """``value`` with NaN / infinities as None, tuples as lists and unknown objects as strings."""
    if isinstance(value, dict):
        return {str(k): json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def write_json(path: str | Path, data, indent: int = 2) -> Path:
    path = Path(path)
    text = json.dumps(json_ready(data), indent=indent, allow_nan=False) + "\n"
    atomic.write_bytes(path, text.encode())
    return path


def write_text(path: str | Path, text: str) -> Path:
    path = Path(path)
    atomic.write_bytes(path, text.encode())
    return path


def write_result(out: str | Path, stem: str, report: dict, markdown: str) -> tuple[Path, Path]:
    """``out/<stem>.json`` and ``out/<stem>.md`` (``out`` is created); returns both paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return write_json(out / f"{stem}.json", report), write_text(out / f"{stem}.md", markdown)
