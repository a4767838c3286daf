"""Train, judge and register the AOI inspection model of one line; the deployed model as an inspector."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from avops import datasets
from avops.home import HomeLayout
from avops.manufacturing import model as aoi
from avops.manufacturing.data import DATA_KEY, PARTS_TABLE
from avops.manufacturing.lines import Line
from avops.registry import ModelRegistry, ModelVersion
from avops.registry.gated import PRODUCTION, settle
from avops.store import ObjectStore, open_store

MODEL = "inspection"
INSPECTION_VERSION = "1"


@dataclass
class InspectionResult:
    version: ModelVersion
    checkpoint_sha256: str
    evidence_sha256: str
    config_digest: str
    config: dict
    train_parts: int
    evaluation: aoi.AoiEvaluation
    gates: list[dict]
    blocked: bool


def load_images(store: ObjectStore, digests: list[str]) -> np.ndarray:
    return np.stack([np.asarray(Image.open(io.BytesIO(store.get_bytes(d)))) for d in digests]) if digests else np.zeros((0, 32, 32), np.uint8)


def production(registry: ModelRegistry, line: str) -> ModelVersion | None:
    return registry.resolve_alias(MODEL, line, PRODUCTION)


def train_line(home: HomeLayout, registry: ModelRegistry, line: Line, actor: str, run_id: str | None = None,
               seed: int = 0) -> InspectionResult:
    """Train on the labelled parts of the line's newest configuration, judge on held-out parts, register."""
    store = open_store(home)
    m = datasets.current(store, home.refs, DATA_KEY, line.id)
    if m is None:
        raise LookupError(f"{DATA_KEY}[{line.id}] has not been materialized; read the line's AOI shifts first")
    parts = datasets.read_table(store, m, PARTS_TABLE).to_pandas()
    if not m.body["shifts"]:
        raise ValueError(f"{line.id}: no AOI shift delivered yet")
    newest = max(m.body["shifts"], key=lambda s: s["start"])["config_digest"]
    labelled = parts[(parts["config_digest"] == newest) & parts["label"].notna()].sort_values("part_id").reset_index(drop=True)
    if labelled.empty or labelled["label"].nunique() < 2:
        raise ValueError(f"{line.id}: the configuration {newest} has {len(labelled)} labelled parts "
                         f"({int(labelled['label'].sum()) if len(labelled) else 0} defects); audits or rework verdicts are needed first")
    labels = labelled["label"].to_numpy(dtype=int)
    test = aoi.held_out(labelled["part_id"].tolist(), labels)
    images = load_images(store, labelled["image_sha256"].tolist())
    net = aoi.train(images[~test], labels[~test], seed=seed)
    ev = aoi.evaluate(aoi.predict(net, images[test]), labels[test])
    gates = aoi.judge(ev, line.gates)
    blocked = any(g["blocks"] for g in gates)
    ckpt_sha = store.put_bytes(aoi.to_bytes(net))
    config = m.body["configs"][newest]
    evidence = {"line": line.id, "config_digest": newest, "config": config, "data_manifest": m.digest, "train_parts": int((~test).sum()),
                "held_out": ev.to_dict(), "gates": gates, "blocked": blocked, "seed": seed,
                "held_out_parts": labelled.loc[test, "part_id"].tolist()}
    evidence_sha = store.put_json(evidence)
    lineage = {"data_manifest": m.digest, "config_digest": newest, "evidence_sha256": evidence_sha, "line_config": config,
               "shifts": sorted(s["shift_id"] for s in m.body["shifts"] if s["config_digest"] == newest)}
    version = registry.register(MODEL, line.id, ckpt_sha, lineage, {k: v for k, v in ev.to_dict().items()}, actor,
                                "AOI inspection model trained", run_id)
    version = settle(registry, version, gates, evidence_sha, "AOI gates", "deployed to the line's AOI station", actor, run_id,
                     {"line": line.id})
    return InspectionResult(version, ckpt_sha, evidence_sha, newest, config, int((~test).sum()), ev, gates, blocked)


def inspector(home: HomeLayout, registry: ModelRegistry, line: str):
    """The line's production model as the AOI station runs it, and its version ((None, None) before the first)."""
    v = production(registry, line)
    if v is None:
        return None, None
    net = aoi.from_bytes(open_store(home).get_bytes(v.artifact_sha256))
    return (lambda images: aoi.predict(net, images)), v.version
