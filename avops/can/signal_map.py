"""``config/can_signals.yaml``: which DBC message/signal carries which canonical vehicle quantity.

Shared by the fleet simulator (to encode its vehicle model onto the bus) and the feature
definitions (to read a quantity by one name on any platform), so neither depends on the other.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import yaml

from avops.fleet_registry import project_root


@lru_cache(maxsize=4)
def load_signal_map(path: str | None = None) -> dict:
    p = Path(path) if path else project_root() / "config" / "can_signals.yaml"
    return yaml.safe_load(p.read_text())
