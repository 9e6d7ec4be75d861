"""Crash-safe records: an append-only keyed JSONL log and atomic JSON/text writes.

Long measuring runs (sampling + judging thousands of answers) must lose nothing when they are interrupted:

- :class:`JsonlLog` appends one JSON object per line and fsyncs each one, so a finished record survives a
  crash or ``kill -9``. A kill in the middle of a write leaves at most one unterminated last line; reading skips it,
  and the next append first cuts it off, so the file never holds a glued-together line. Records carry a ``key``;
  :meth:`JsonlLog.append_keyed` never writes a key twice, so a re-run skips finished work instead of duplicating it.
- :func:`atomic_write_json` / :func:`atomic_write_text` write a temporary file in the target's folder and
  ``os.replace`` it over the target: readers see the old file or the new one, never half of one.

One writer per file: nothing here locks against two processes appending to the same log.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

__all__ = ["JsonlLog", "atomic_write_json", "atomic_write_text", "json_safe", "stable_key"]


def stable_key(*parts: Any) -> str:
    """A short hex key for JSON-serialisable ``parts``, stable across runs, processes and machines.

    Args:
        *parts: JSON values (dict keys are sorted, so their order does not matter).

    Returns:
        The first 24 hex digits of the SHA-256 of their canonical JSON (96 bits).
    """
    canonical = json.dumps(parts, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:24]


def json_safe(value: Any) -> Any:
    """``value`` with NaN / ±inf floats replaced by ``None`` (strict JSON has no NaN), recursively."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def _fsync_directory(directory: Path) -> None:
    """Persist a rename in ``directory`` (POSIX; a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, fsync, ``os.replace``).

    Args:
        path: target file; its folder is created.
        text: the content.
        encoding: text encoding.

    Returns:
        The path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding=encoding, newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    _fsync_directory(path.parent)
    return path


def atomic_write_json(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as JSON to ``path`` atomically; NaN / ±inf floats are written as ``null``.

    Args:
        path: target file; its folder is created.
        obj: a JSON-serialisable value.
        indent: JSON indentation (``None``: one line).

    Returns:
        The path.
    """
    text = json.dumps(json_safe(obj), indent=indent, ensure_ascii=False, allow_nan=False)
    return atomic_write_text(path, text + "\n")


class JsonlLog:
    """An append-only JSON-lines file of keyed records that survives interruption.

    Args:
        path: the ``.jsonl`` file (created with its folder on first append).
        key_field: name of the field holding each record's key.

    Example::

        log = JsonlLog(run_dir / "answers.jsonl")
        for key, prompt in work:
            if key in log:
                continue  # finished in an earlier run
            log.append_keyed({"key": key, "answer": generate(prompt)})
    """

    def __init__(self, path: str | os.PathLike, key_field: str = "key") -> None:
        self.path = Path(path)
        self.key_field = key_field
        self._keys: set[str] | None = None
        self._repaired = False

    def __repr__(self) -> str:
        return f"JsonlLog({str(self.path)!r})"

    # -- reading -----------------------------------------------------------------------------------------------------

    def read(self) -> list[dict[str, Any]]:
        """All complete records, in file order.

        An unterminated last line that is not valid JSON (a write cut short by a kill) is skipped.

        Returns:
            The records (dicts); ``[]`` when the file does not exist.

        Raises:
            ValueError: a line other than the last is not a JSON object (the file was damaged otherwise).
        """
        if not self.path.exists():
            return []
        lines = self.path.read_bytes().split(b"\n")
        records = []
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                if number == len(lines):  # unterminated tail: an interrupted write
                    continue
                raise ValueError(f"{self.path}: line {number} is not valid JSON; the log is damaged") from None
            if not isinstance(record, dict):
                raise ValueError(f"{self.path}: line {number} is not a JSON object")
            records.append(record)
        return records

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return iter(self.read())

    def __len__(self) -> int:
        return len(self.read())

    def by_key(self) -> dict[str, dict[str, Any]]:
        """``{key: record}`` for the records that have a key (the first record wins if a key repeats)."""
        records: dict[str, dict[str, Any]] = {}
        for record in self.read():
            key = record.get(self.key_field)
            if key is not None and key not in records:
                records[str(key)] = record
        return records

    def keys(self) -> set[str]:
        """Keys of the records written so far."""
        if self._keys is None:
            self._keys = set(self.by_key())
        return set(self._keys)

    def __contains__(self, key: object) -> bool:
        if self._keys is None:
            self._keys = set(self.by_key())
        return key in self._keys

    # -- writing -----------------------------------------------------------------------------------------------------

    def repair(self) -> bool:
        """Make the file end with a complete line: terminate a valid unterminated last record, drop a torn one.

        Returns:
            ``True`` when the file was changed.
        """
        if not self.path.exists():
            return False
        with open(self.path, "rb+") as handle:
            size = handle.seek(0, os.SEEK_END)
            if size == 0:
                return False
            handle.seek(size - 1)
            if handle.read(1) == b"\n":
                return False
            # find the start of the unterminated last line
            position, chunk = size, 4096
            start = 0
            while position > 0:
                step = min(chunk, position)
                position -= step
                handle.seek(position)
                block = handle.read(step)
                newline = block.rfind(b"\n")
                if newline >= 0:
                    start = position + newline + 1
                    break
            handle.seek(start)
            tail = handle.read()
            try:
                complete = isinstance(json.loads(tail), dict)
            except ValueError:
                complete = False
            if complete:
                handle.seek(size)
                handle.write(b"\n")
            else:
                handle.truncate(start)
            handle.flush()
            os.fsync(handle.fileno())
        return True

    def append(self, record: Mapping[str, Any]) -> None:
        """Append one record (a JSON object; NaN floats become ``null``) and fsync it.

        Raises:
            ValueError: the record is not a mapping or not JSON-serialisable.
        """
        if not isinstance(record, Mapping):
            raise ValueError(f"a log record must be a dict, got {type(record).__name__}")
        try:
            line = json.dumps(json_safe(dict(record)), ensure_ascii=False, allow_nan=False)
        except TypeError as exc:
            raise ValueError(f"log record is not JSON-serialisable: {exc}") from None
        if not self._repaired:
            self.repair()
            self._repaired = True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "ab") as handle:
            handle.write(line.encode("utf-8") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        key = record.get(self.key_field)
        if key is not None and self._keys is not None:
            self._keys.add(str(key))

    def append_keyed(self, record: Mapping[str, Any]) -> bool:
        """Append ``record`` unless a record with its key is already in the log.

        Returns:
            ``True`` when written, ``False`` when the key was already there.

        Raises:
            ValueError: the record has no key field.
        """
        key = record.get(self.key_field) if isinstance(record, Mapping) else None
        if key is None:
            raise ValueError(f"keyed record needs a {self.key_field!r} field")
        if str(key) in self:
            return False
        self.append(record)
        return True
