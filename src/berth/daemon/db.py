"""The daemon's metadata in SQLite (WAL): one table of records per kind (containers,
networks, volumes…), each a JSON document with a unique id and an optional unique name.
Writes are transactions, so a crash leaves either the old or the new record."""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Iterator

from berth.errors import AlreadyExists, NotFound

SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    kind TEXT NOT NULL,
    id   TEXT NOT NULL,
    name TEXT,
    data TEXT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE UNIQUE INDEX IF NOT EXISTS records_name ON records (kind, name) WHERE name IS NOT NULL;
"""


class MetadataDB:
    def __init__(self, path: str) -> None:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def put(self, kind: str, record_id: str, data: dict, name: str | None = None, *, create: bool = False) -> None:
        """Insert (``create``: refuse an existing id or name) or replace a record."""
        raw = json.dumps(data)
        try:
            if create:
                self._db.execute("INSERT INTO records (kind, id, name, data) VALUES (?, ?, ?, ?)",
                                 (kind, record_id, name, raw))
            else:
                self._db.execute("INSERT OR REPLACE INTO records (kind, id, name, data) VALUES (?, ?, ?, ?)",
                                 (kind, record_id, name, raw))
        except sqlite3.IntegrityError:
            what = f'name "{name}"' if name else f"id {record_id}"
            raise AlreadyExists(f"the {kind} {what} is already in use") from None

    def get(self, kind: str, record_id: str) -> dict:
        row = self._db.execute("SELECT data FROM records WHERE kind = ? AND id = ?", (kind, record_id)).fetchone()
        if row is None:
            raise NotFound(f"no such {kind}: {record_id}")
        return json.loads(row[0])

    def find(self, kind: str, ref: str) -> tuple[str, dict]:
        """By full id, by name (with or without a leading '/'), or by a unique id prefix."""
        name = ref[1:] if ref.startswith("/") else ref
        row = self._db.execute("SELECT id, data FROM records WHERE kind = ? AND (id = ? OR name = ?)",
                               (kind, ref, name)).fetchone()
        if row is None and ref:
            rows = self._db.execute("SELECT id, data FROM records WHERE kind = ? AND id LIKE ? LIMIT 2",
                                    (kind, ref.replace("%", "") + "%")).fetchall()
            if len(rows) > 1:
                from berth.errors import InvalidArgument

                raise InvalidArgument(f"multiple {kind}s found with provided prefix: {ref}")
            row = rows[0] if rows else None
        if row is None:
            raise NotFound(f"No such {kind}: {ref}")
        return row[0], json.loads(row[1])

    def rename(self, kind: str, record_id: str, new_name: str) -> None:
        try:
            self._db.execute("UPDATE records SET name = ? WHERE kind = ? AND id = ?", (new_name, kind, record_id))
        except sqlite3.IntegrityError:
            raise AlreadyExists(f'the {kind} name "{new_name}" is already in use') from None

    def delete(self, kind: str, record_id: str) -> None:
        self._db.execute("DELETE FROM records WHERE kind = ? AND id = ?", (kind, record_id))

    def all(self, kind: str) -> Iterator[tuple[str, dict]]:
        for record_id, data in self._db.execute("SELECT id, data FROM records WHERE kind = ? ORDER BY rowid", (kind,)):
            yield record_id, json.loads(data)
