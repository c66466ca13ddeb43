"""The node's persistent queue: one row per series, in SQLite, so that a restart finishes exactly what was left.

States: ``receiving`` (instances arriving), ``waiting`` (no instance for the stable time: ready to segment),
``running``, ``sending`` (results written, C-STORE to the destination pending or being retried), ``sent`` and
``failed`` (with the one-line reason). Only UIDs are stored, never a patient's name or ID.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

RECEIVING, WAITING, RUNNING, SENDING, SENT, FAILED = "receiving", "waiting", "running", "sending", "sent", "failed"
MAX_BACKOFF_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS series (
    series_uid TEXT PRIMARY KEY, study_uid TEXT NOT NULL, calling_ae TEXT NOT NULL, state TEXT NOT NULL,
    instances INTEGER NOT NULL DEFAULT 0, last_arrival REAL NOT NULL, updated REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0, next_try REAL NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT ''
)"""


@dataclass
class SeriesRow:
    series_uid: str
    study_uid: str
    calling_ae: str
    state: str
    instances: int
    last_arrival: float
    updated: float
    attempts: int
    next_try: float
    message: str


class SeriesQueue:
    """The queue in ``DIR/queue.sqlite``; safe to use from the receiving threads and the worker (one connection per
    call, SQLite's own locking)."""

    def __init__(self, storage: Path) -> None:
        storage.mkdir(parents=True, exist_ok=True)
        self.path = storage / "queue.sqlite"
        with self._connect() as db:
            db.execute(_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level="IMMEDIATE")

    def instance_stored(self, series_uid: str, study_uid: str, calling_ae: str, now: float | None = None) -> None:
        """One more instance of a series is on disk: the series is (again) receiving."""
        now = time.time() if now is None else now
        with self._connect() as db:
            db.execute("""INSERT INTO series (series_uid, study_uid, calling_ae, state, instances, last_arrival,
                          updated) VALUES (?, ?, ?, ?, 1, ?, ?)
                          ON CONFLICT(series_uid) DO UPDATE SET instances = instances + 1,
                          last_arrival = excluded.last_arrival, updated = excluded.updated,
                          state = CASE WHEN state IN (?, ?) THEN ? ELSE state END""",
                       (series_uid, study_uid, calling_ae, RECEIVING, now, now, RECEIVING, WAITING, RECEIVING))

    def recover(self) -> int:
        """After a restart: a series that was running runs again (its partial outputs are overwritten)."""
        with self._connect() as db:
            return db.execute("UPDATE series SET state = ?, updated = ? WHERE state = ?",
                              (WAITING, time.time(), RUNNING)).rowcount

    def promote_stable(self, stable_seconds: float, now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._connect() as db:
            db.execute("UPDATE series SET state = ?, updated = ? WHERE state = ? AND last_arrival <= ?",
                       (WAITING, now, RECEIVING, now - stable_seconds))

    def take_waiting(self) -> SeriesRow | None:
        """The oldest waiting series, marked running (None when there is none)."""
        with self._connect() as db:
            row = db.execute("SELECT * FROM series WHERE state = ? ORDER BY last_arrival LIMIT 1",
                             (WAITING,)).fetchone()
            if row is None:
                return None
            db.execute("UPDATE series SET state = ?, updated = ? WHERE series_uid = ?", (RUNNING, time.time(), row[0]))
        return SeriesRow(*row[:3], RUNNING, *row[4:])

    def due_for_sending(self, now: float | None = None) -> list[SeriesRow]:
        now = time.time() if now is None else now
        with self._connect() as db:
            rows = db.execute("SELECT * FROM series WHERE state = ? AND next_try <= ? ORDER BY updated",
                              (SENDING, now)).fetchall()
        return [SeriesRow(*row) for row in rows]

    def set_state(self, series_uid: str, state: str, message: str = "") -> None:
        with self._connect() as db:
            db.execute("UPDATE series SET state = ?, message = ?, updated = ?, attempts = 0, next_try = 0 "
                       "WHERE series_uid = ?", (state, message, time.time(), series_uid))

    def send_failed(self, series_uid: str, message: str, now: float | None = None) -> None:
        """A failed C-STORE: retried after 2, 4, 8 ... seconds (at most MAX_BACKOFF_S), the reason kept visible."""
        now = time.time() if now is None else now
        with self._connect() as db:
            attempts = db.execute("SELECT attempts FROM series WHERE series_uid = ?", (series_uid,)).fetchone()[0] + 1
            db.execute("UPDATE series SET attempts = ?, next_try = ?, message = ?, updated = ? WHERE series_uid = ?",
                       (attempts, now + min(2.0 ** attempts, MAX_BACKOFF_S), message, now, series_uid))

    def rows(self) -> list[SeriesRow]:
        with self._connect() as db:
            return [SeriesRow(*row) for row in db.execute("SELECT * FROM series ORDER BY last_arrival").fetchall()]


def status_table(rows: list[SeriesRow]) -> str:
    """The queue as a text table (``lightseg listen --status``)."""
    lines = [f"{'series UID':<64} {'state':<9} {'images':>6} {'tries':>5}  {'updated (UTC)':<19}  message"]
    for row in rows:
        updated = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row.updated))
        lines.append(f"{row.series_uid:<64} {row.state:<9} {row.instances:>6} {row.attempts:>5}  {updated}  "
                     f"{row.message}")
    return "\n".join(lines)
