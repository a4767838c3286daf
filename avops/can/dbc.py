"""Finding, hashing and loading DBC files.

A spec is either a filesystem path or ``opendbc:<name>`` (a DBC shipped in the
``opendbc`` package), so configs and CLI calls can name public vehicle DBCs
without copying them around. The sha256 lets ingest record exactly which DBC
decoded which signals.
"""

from __future__ import annotations

import difflib
import hashlib
import logging
from functools import lru_cache
from pathlib import Path

import cantools

OPENDBC_PREFIX = "opendbc:"


class DbcError(ValueError):
    """A DBC spec that cannot be resolved or loaded; the message says what to do."""


def _opendbc_dir() -> Path:
    try:
        import opendbc
    except ImportError as exc:  # pragma: no cover - opendbc is a dependency
        raise DbcError("opendbc is not installed: `pip install opendbc` or give a path to a .dbc file") from exc
    return Path(opendbc.__file__).resolve().parent / "dbc"


def available_opendbc() -> list[str]:
    """Names usable as ``opendbc:<name>`` (not all of them load with cantools)."""
    return sorted(p.stem for p in _opendbc_dir().glob("*.dbc"))


def dbc_path(spec: str | Path) -> Path:
    """Resolve a spec to an existing, absolute .dbc path (raises DbcError if there is none)."""
    if isinstance(spec, str) and spec.startswith(OPENDBC_PREFIX):
        name = spec[len(OPENDBC_PREFIX) :].strip()
        if name.endswith(".dbc"):
            name = name[:-4]
        path = _opendbc_dir() / f"{name}.dbc"
        if not name or "/" in name or "\\" in name or not path.is_file():
            close = difflib.get_close_matches(name, available_opendbc(), n=3)
            hint = f"; did you mean {', '.join(OPENDBC_PREFIX + c for c in close)}?" if close else ""
            raise DbcError(
                f"DBC {spec!r}: no {name or '<empty>'}.dbc in the installed opendbc package{hint} "
                f"(list them with avops.can.dbc.available_opendbc())"
            )
        return path
    path = Path(spec).expanduser()
    if not path.is_file():
        raise DbcError(f"DBC {str(spec)!r}: file not found; give a path to a .dbc file or opendbc:<name>")
    return path.resolve()


def dbc_sha256(spec: str | Path) -> str:
    """Hex sha256 of the DBC file bytes, to record which DBC decoded what."""
    return hashlib.sha256(dbc_path(spec).read_bytes()).hexdigest()


def load_dbc(spec: str | Path) -> cantools.database.Database:
    """Load a DBC (``strict=False``: real-world DBCs often have overlapping signals).

    Cached on (resolved path, mtime), so repeated loads are free but an edited
    file is reloaded. Treat the returned database as read-only: it is shared.
    """
    path = dbc_path(spec)
    try:
        db = _load_cached(str(path), path.stat().st_mtime_ns)
    except Exception as exc:
        detail = " ".join(str(exc).split())[:240] or type(exc).__name__
        raise DbcError(
            f"DBC {str(spec)!r} ({path}) could not be loaded by cantools: {detail}; "
            f"fix the file or use another DBC"
        ) from exc
    if not db.messages:
        raise DbcError(f"DBC {str(spec)!r} ({path}) defines no messages; is it really a DBC file?")
    return db


@lru_cache(maxsize=32)
def _load_cached(path: str, mtime_ns: int) -> cantools.database.Database:
    # cantools logs a warning per overwritten or odd entry: DBC quirks, not actionable here.
    cantools_log = logging.getLogger("cantools")
    level = cantools_log.level
    cantools_log.setLevel(logging.ERROR)
    try:
        return cantools.database.load_file(path, database_format="dbc", strict=False)
    finally:
        cantools_log.setLevel(level)
