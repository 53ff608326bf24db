"""``vqdna inspect``: what a Parquet artifact holds, readable in a terminal."""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from vqdna import VqdnaError
from vqdna.io import read_metadata

_MAX_CELL = 60


def _cell(value: object) -> str:
    if isinstance(value, list):
        text = "[" + ", ".join(map(str, value[:12])) + (f", ... ({len(value)} items)]" if len(value) > 12 else "]")
    else:
        text = str(value)
    return text if len(text) <= _MAX_CELL else text[: _MAX_CELL - 3] + "..."


def inspect_path(path: str | Path, rows: int = 5) -> str:
    path = Path(path)
    if not path.is_file():
        raise VqdnaError(f"{path}: no such file (inspect takes a .parquet artifact)")
    metadata = read_metadata(path)
    parquet = pq.ParquetFile(path)
    lines = [f"{path}", f"rows: {parquet.metadata.num_rows}   row groups: {parquet.metadata.num_row_groups}", "", "schema:"]
    lines += [f"  {field.name}: {field.type}" for field in parquet.schema_arrow]
    lines += ["", "metadata:"] + [f"  {k}: {v}" for k, v in sorted(metadata.items())]
    if rows > 0 and parquet.metadata.num_rows:
        head = next(parquet.iter_batches(batch_size=rows)).to_pylist()
        lines += ["", f"first {len(head)} rows:"]
        for i, row in enumerate(head):
            lines.append(f"  [{i}] " + "  ".join(f"{k}={_cell(v)}" for k, v in row.items()))
    return "\n".join(lines)
