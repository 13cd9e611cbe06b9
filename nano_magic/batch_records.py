"""Batches sent to a provider's Batch API, and the requests in each, kept in the answer cache's SQLite file.

A rerun of the same cell (or of the same `Chat.map` call) finds its batches here by the requests' cache keys,
so collecting needs nothing from the kernel that submitted them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .cache import SqliteFile

__all__ = ["BatchRecord", "BatchRecords"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id TEXT PRIMARY KEY,
    label TEXT NOT NULL,
    model TEXT NOT NULL,
    base_url TEXT NOT NULL,
    endpoint TEXT NOT NULL,
    status TEXT NOT NULL,
    total INTEGER NOT NULL,
    completed INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL,
    reserved REAL,
    cost REAL,
    collected REAL
);
CREATE TABLE IF NOT EXISTS batch_items (
    batch_id TEXT NOT NULL,
    custom_id TEXT NOT NULL,
    PRIMARY KEY (batch_id, custom_id)
);
CREATE INDEX IF NOT EXISTS batch_items_by_custom_id ON batch_items (custom_id);
"""
_COLUMNS = "id, label, model, base_url, endpoint, status, total, completed, failed, created, reserved, cost, collected"
_LOOKUP_CHUNK = 500


@dataclass
class BatchRecord:
    """One submitted batch as last seen: `reserved` is its worst-case cost, held against the budget until it is collected."""

    id: str
    label: str
    model: str
    base_url: str
    endpoint: str
    status: str
    total: int
    completed: int
    failed: int
    created: float
    reserved: float | None
    cost: float | None
    collected: float | None


class BatchRecords(SqliteFile):
    """The `batches` and `batch_items` tables; every change is committed at once."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    def record(self, batch: BatchRecord, custom_ids: Iterable[str]) -> None:
        """Keep a batch just created and its requests' custom ids, in one transaction."""
        values = (batch.id, batch.label, batch.model, batch.base_url, batch.endpoint, batch.status, batch.total, batch.completed,
                  batch.failed, batch.created, batch.reserved, batch.cost, batch.collected)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.execute(f"INSERT OR REPLACE INTO batches ({_COLUMNS}) VALUES ({','.join('?' * 13)})", values)
                self._db.executemany("INSERT OR IGNORE INTO batch_items VALUES (?, ?)", ((batch.id, cid) for cid in custom_ids))
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def outstanding(self, base_url: str, custom_ids: Iterable[str]) -> list[BatchRecord]:
        """The batches on this server, not yet collected, that hold any of `custom_ids`, oldest first."""
        unique = list(dict.fromkeys(custom_ids))
        found: set[str] = set()
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(
                    f"SELECT DISTINCT i.batch_id FROM batch_items i JOIN batches b ON b.id = i.batch_id "
                    f"WHERE b.collected IS NULL AND b.base_url = ? AND i.custom_id IN ({marks})", [base_url, *chunk]).fetchall()
            found.update(row[0] for row in rows)
        records = [record for batch_id in found if (record := self.get(batch_id)) is not None]
        return sorted(records, key=lambda b: (b.created, b.id))

    def get(self, batch_id: str) -> BatchRecord | None:
        """One batch by its id."""
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM batches WHERE id = ?", (batch_id,)).fetchone()
        return BatchRecord(*row) if row else None

    def all(self) -> list[BatchRecord]:
        """Every recorded batch, newest first."""
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM batches ORDER BY created DESC, id").fetchall()
        return [BatchRecord(*row) for row in rows]

    def items(self, batch_id: str) -> list[str]:
        """The custom ids of a batch's requests."""
        with self._lock:
            return [row[0] for row in self._db.execute("SELECT custom_id FROM batch_items WHERE batch_id = ?", (batch_id,))]

    def update(self, batch_id: str, status: str, completed: int, failed: int) -> None:
        """The status and counts the provider last reported."""
        with self._lock:
            self._db.execute("UPDATE batches SET status = ?, completed = ?, failed = ? WHERE id = ?", (status, completed, failed, batch_id))

    def collect(self, batch_id: str, cost: float | None) -> None:
        """Mark a finished batch as collected: its answers are in the cache and it no longer holds budget."""
        with self._lock:
            self._db.execute("UPDATE batches SET collected = ?, cost = ? WHERE id = ?", (time.time(), cost, batch_id))

    def reserved(self) -> float:
        """Dollars held for batches not yet collected."""
        with self._lock:
            row = self._db.execute("SELECT COALESCE(SUM(reserved), 0) FROM batches WHERE collected IS NULL").fetchone()
        return float(row[0])
