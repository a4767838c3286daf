"""The label ontology (``config/ontology.yaml``): the classes labels may use.

Production code takes classes from here, never from the simulator, so a real fleet's
ontology is a configuration change.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import yaml

from avops.fleet_registry import project_root


@dataclass(frozen=True)
class Ontology:
    uri: str
    classes: tuple[str, ...]
    vru_classes: tuple[str, ...]
    odd: dict[str, tuple]

    def index(self, cls: str) -> int:
        try:
            return self.classes.index(cls)
        except ValueError:
            raise ValueError(f"class {cls!r} is not in the ontology {self.uri} ({', '.join(self.classes)})") from None


@lru_cache(maxsize=4)
def load_ontology(path: str | None = None) -> Ontology:
    p = Path(path) if path else project_root() / "config" / "ontology.yaml"
    raw = yaml.safe_load(p.read_text())
    classes = tuple(c["name"] for c in raw["classes"])
    vru = tuple(c["name"] for c in raw["classes"] if c.get("vru"))
    return Ontology(raw["ontology_uri"], classes, vru, {k: tuple(v) for k, v in raw["odd"].items()})
