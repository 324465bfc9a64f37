"""The checkpoint of a batch load: per input file, how many of its rows (in file order) are durably
written, so a rerun of the same load continues where the last one stopped.

It is a small JSON file, replaced atomically (written aside, fsynced, renamed) after the sink has
acknowledged the rows it counts, so it never claims a row that was not stored; a crash at any point
loses at most the rows written since the last save, which the rerun writes again (writes are upserts of
whole FG rows, so that is harmless). A file whose size or modification time changed since is loaded
again from its start. The checkpoint is deleted when the load completes.

Where: ``--checkpoint FILE``, else ``.ofs-push/<job>.json`` in the current directory, ``<job>`` a
hash of the entity, the column mapping, the sink and the sources as given, so the same command finds
its checkpoint and a different load never takes another's.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from online_feature_store.batch.sources import SourceFile
from online_feature_store.errors import InvalidInputError

__all__ = ["DEFAULT_DIRECTORY", "Checkpoint", "job_id"]

DEFAULT_DIRECTORY = ".ofs-push"
_VERSION = 1


def job_id(job: dict[str, Any]) -> str:
    """16 hex digits naming a load (a hash of its description)."""
    text = json.dumps(job, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Checkpoint:
    """Rows done per file of one load (``job``); :meth:`save` after each acknowledged unit."""

    def __init__(self, path: Path, job: dict[str, Any], files: dict[str, dict[str, Any]]) -> None:
        self.path = path
        self.job = json.loads(json.dumps(job))  # as it reads back (tuples become lists)
        self._files = files

    @classmethod
    def open(cls, path: Path | None, job: dict[str, Any], *, restart: bool = False) -> Checkpoint:
        """The checkpoint at ``path`` (default ``.ofs-push/<job id>.json``), or a fresh one when none is
        there or ``restart``. One left by a different load is an error (choose another path, or
        ``restart``)."""
        if path is None:
            path = Path(DEFAULT_DIRECTORY) / f"{job_id(job)}.json"
        if restart or not path.exists():
            return cls(path, job, {})
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            files = data["files"]
            stored_job = data["job"]
            if data.get("version") != _VERSION or not isinstance(files, dict):
                raise ValueError("unknown layout")
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise InvalidInputError(
                f"checkpoint {path}: unreadable ({e}); delete it or pass --restart"
            ) from e
        if stored_job != json.loads(json.dumps(job)):
            raise InvalidInputError(
                f"checkpoint {path} belongs to another load (entity, mapping, sink or sources differ); "
                "pass another --checkpoint file, or --restart to discard it"
            )
        return cls(path, job, files)

    @property
    def resumed(self) -> bool:
        """True when an earlier run had loaded some rows."""
        return any(f.get("rows_done", 0) for f in self._files.values())

    def rows_done(self, source: SourceFile) -> int:
        """Rows of ``source`` already loaded (0 when the file changed since they were)."""
        entry = self._files.get(source.path)
        if entry is None or entry.get("identity") != source.identity():
            return 0
        return int(entry.get("rows_done", 0))

    def complete(self, source: SourceFile) -> bool:
        """True when every row of ``source`` (as it is now) was loaded."""
        entry = self._files.get(source.path)
        return bool(entry and entry.get("identity") == source.identity() and entry.get("complete"))

    def advance(self, source: SourceFile, rows_done: int, *, complete: bool = False) -> None:
        """Records ``rows_done`` rows of ``source`` as loaded (call :meth:`save` to persist)."""
        self._files[source.path] = {
            "identity": source.identity(),
            "rows_done": rows_done,
            "complete": complete,
        }

    def save(self) -> None:
        """Writes the checkpoint atomically (a temporary file, fsynced, renamed over it)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps({"version": _VERSION, "job": self.job, "files": self._files}, indent=1)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=self.path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def finish(self) -> None:
        """The load completed: removes the checkpoint."""
        self.path.unlink(missing_ok=True)
