"""The batch's summary table: one row per study, as CSV (and Parquet when pyarrow is installed)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from ..io import write_atomically
from .job import COLUMNS


def write_summary(rows: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """Write ``summary.csv`` (and ``summary.parquet``) in ``out_dir``, rows in study id order; returns the paths."""
    rows = sorted(rows, key=lambda r: r["id"])
    csv_path = out_dir / "summary.csv"

    def write_csv(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(csv_path, write_csv)
    written = [csv_path]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return written
    table = pa.Table.from_pylist([{c: None if r.get(c) == "" else r.get(c) for c in COLUMNS} for r in rows])
    parquet_path = out_dir / "summary.parquet"
    write_atomically(parquet_path, lambda tmp: pq.write_table(table, tmp))
    return written + [parquet_path]
