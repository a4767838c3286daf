from types import SimpleNamespace as NS

import numpy as np
import pandas as pd
import pytest

from avops.curation.selection import SelectionConfig, select_frames
from avops.training.shadow import frame_disagreement, shadow_compare
from avops.training.slices import SliceSpec

B = lambda *xs: np.array(xs, float).reshape(-1, 4)  # noqa: E731


def test_frame_disagreement_by_hand():
    assert frame_disagreement(B(), [], B(), []) == 0.0
    assert frame_disagreement(B([0, 0, 10, 10]), ["car"], B([0, 0, 10, 10]), ["car"]) == 0.0
    assert frame_disagreement(B([0, 0, 10, 10]), ["car"], B([0, 0, 10, 10]), ["truck"]) == 1.0
    # 2 vs 1 detections, one match: 1 - 2*1/3
    assert frame_disagreement(B([0, 0, 10, 10], [20, 20, 30, 30]), ["car", "car"], B([0, 0, 10, 10]), ["car"]) == pytest.approx(1 / 3)


def test_shadow_disagreement_per_slice_feeds_selection():
    n = 40
    frames = pd.DataFrame({
        "drive_id": [f"d{i % 8}" for i in range(n)], "frame_index": range(n), "timestamp": 1.77e9 + np.arange(n) * 2.0,
        "uncertainty": 0.1, "disagreement": 0.05, "n_detections": 1,
        "illumination": ["night" if i % 4 == 0 else "day" for i in range(n)], "weather": "clear", "roadworks": False, "has_vru": False,
    })
    car = NS(boxes=B([0, 0, 10, 10]), classes=["car"])
    truck = NS(boxes=B([0, 0, 10, 10]), classes=["truck"])
    production = [car] * n
    candidate = [truck if i % 4 == 0 else car for i in range(n)]  # the candidate changes its mind at night
    out, rates = shadow_compare(frames, candidate, production, [SliceSpec("night", {"illumination": "night"}), SliceSpec("day", {"illumination": "day"})])
    r = rates.set_index("slice")
    assert r.loc["night", "rate"] == 1.0 and r.loc["day", "rate"] == 0.0
    sel = select_frames(out, SelectionConfig(10, 0, 1.0, 0.0, 1.0, {}))
    chosen = sel[sel["selected"]]
    assert (chosen["illumination"] == "night").all(), "shadow disagreements are the most informative frames"
    assert chosen["reasons"].str.contains("shadow_disagreement").all()
