"""Answers kept in SQLite, keyed by a hash of the request, so that a rerun sends only what has no answer yet."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, TypeVar

from .jsontext import digest, load_json
from .usage import Usage

__all__ = ["AnswerCache", "SqliteFile", "request_key"]

_F = TypeVar("_F", bound="SqliteFile")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,
    text TEXT NOT NULL,
    model TEXT NOT NULL,
    usage TEXT,
    created REAL NOT NULL
)
"""
_TRANSPORT_ONLY = ("stream", "stream_options")  # how the answer travels, not what it is
_LOOKUP_CHUNK = 500


def request_key(url: str, body: Mapping[str, Any]) -> str:
    """The hash of what decides an answer: the endpoint and the body (model, messages, options, schema); never headers."""
    return digest([url, {k: v for k, v in body.items() if k not in _TRANSPORT_ONLY}])


class SqliteFile:
    """One SQLite file in WAL mode, shared by threads under a lock; every change is committed at once."""

    def __init__(self, path: str | Path, schema: str) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # in WAL mode a commit survives a crash of the process
        self._db.executescript(schema)

    def close(self) -> None:
        """Close the database."""
        with self._lock:
            self._db.close()

    def __enter__(self: _F) -> _F:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AnswerCache(SqliteFile):
    """The answers, each committed as it arrives, so an interrupt or crash loses none."""

    def __init__(self, path: str | Path) -> None:
        super().__init__(path, _SCHEMA)

    def found(self, keys: Iterable[str]) -> Iterator[tuple[str, str, Usage | None]]:
        """(key, text, usage) for each of `keys` that has an answer."""
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), _LOOKUP_CHUNK):
            chunk = unique[start:start + _LOOKUP_CHUNK]
            marks = ",".join("?" * len(chunk))
            with self._lock:
                rows = self._db.execute(f"SELECT key, text, usage FROM answers WHERE key IN ({marks})", chunk).fetchall()
            for key, text, usage in rows:
                yield key, text, Usage.from_dict(load_json(usage)) if usage else None

    def put_many(self, answers: Iterable[tuple[str, str, str, Usage | None]]) -> None:
        """Keep many (key, text, model, usage) answers in one transaction: a collected batch lands whole or not at all."""
        now = time.time()
        rows = ((key, text, model, json.dumps(usage.to_dict()) if usage else None, now) for key, text, model, usage in answers)
        with self._lock:
            self._db.execute("BEGIN")
            try:
                self._db.executemany("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)", rows)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def put(self, key: str, text: str, model: str, usage: Usage | None) -> None:
        """Keep one answer, committed at once."""
        data = json.dumps(usage.to_dict()) if usage else None
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)", (key, text, model, data, time.time()))
