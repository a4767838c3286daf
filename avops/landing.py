"""Find what is new in the landing zone without re-reading what is old.

The cursor is a watermark on change time plus the names seen at exactly that time.
A folder whose own mtime/ctime is older than the watermark cannot contain new names
(adding or renaming a file into a folder updates the folder), so its files are not
even stat()ed: a tick over 10,000 landed files costs a directory walk, not 10,000
stats. Uploaders follow the landing protocol: write ``.name.partial``, then rename.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

IN_FLIGHT_SUFFIXES = (".partial", ".tmp")


@dataclass
class LandingCursor:
    watermark_ns: int = 0
    at_watermark: list[str] = field(default_factory=list)

    def to_json(self) -> str:
        return json.dumps({"w": self.watermark_ns, "at": sorted(self.at_watermark)})

    @classmethod
    def from_json(cls, text: str | None) -> LandingCursor:
        if not text:
            return cls()
        d = json.loads(text)
        return cls(int(d.get("w", 0)), list(d.get("at", [])))


def _changed_ns(st: os.stat_result) -> int:
    return max(st.st_mtime_ns, st.st_ctime_ns)


def scan_new(landing_root: Path, cursor: LandingCursor) -> tuple[dict[str, list[str]], LandingCursor]:
    """Return {cohort: [new relative paths]} and the advanced cursor."""
    new: dict[str, list[str]] = {}
    if not landing_root.exists():
        return new, cursor
    w = cursor.watermark_ns
    seen_at_w = set(cursor.at_watermark)
    max_ns = w
    at_max: set[str] = set(seen_at_w)
    stack = [landing_root]
    while stack:
        folder = stack.pop()
        try:
            folder_changed = _changed_ns(folder.stat()) >= w
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir(follow_symlinks=False):
                stack.append(Path(entry.path))
                continue
            if not folder_changed or entry.name.endswith(IN_FLIGHT_SUFFIXES):
                continue
            try:
                changed = _changed_ns(entry.stat())
            except FileNotFoundError:
                continue
            rel = os.path.relpath(entry.path, landing_root)
            if changed < w or (changed == w and rel in seen_at_w):
                continue
            parts = Path(rel).parts
            if len(parts) < 2:
                continue  # a file directly in the landing root belongs to no cohort
            new.setdefault(parts[0], []).append(rel)
            if changed > max_ns:
                max_ns, at_max = changed, {rel}
            elif changed == max_ns:
                at_max.add(rel)
    for files in new.values():
        files.sort()
    return new, LandingCursor(max_ns, sorted(at_max))
