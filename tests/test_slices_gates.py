import numpy as np
import pandas as pd
import pytest

from avops.training.bounds import wilson_lower
from avops.training.gates import load_gate_policy, evaluate_gates
from avops.training.slices import SliceSpec, match_objects, slice_metrics

B = lambda *xs: np.array(xs, float).reshape(-1, 4)  # noqa: E731


def _fixture():
    # frame 0 (day): 2 cars, both found; frame 1 (night): car found, pedestrian missed, 1 false positive truck;
    # frame 2 (night, rain): cyclist found with the wrong class (counts as miss + false positive)
    frames = pd.DataFrame({"illumination": ["day", "night", "night"], "weather": ["clear", "clear", "rain"]})
    gt_b = [B([0, 0, 10, 10], [20, 20, 30, 30]), B([0, 0, 10, 10], [50, 50, 55, 60]), B([5, 5, 15, 25])]
    gt_c = [["car", "car"], ["car", "pedestrian"], ["cyclist"]]
    pr_b = [B([1, 1, 10, 10], [20, 21, 30, 30]), B([0, 0, 10, 11], [70, 70, 90, 90]), B([5, 5, 15, 25])]
    pr_c = [["car", "car"], ["car", "truck"], ["pedestrian"]]
    pr_s = [np.array([0.9, 0.8]), np.array([0.7, 0.6]), np.array([0.5])]
    return frames, match_objects(pr_b, pr_c, pr_s, gt_b, gt_c)


def test_slice_metrics_match_a_hand_count():
    frames, (gt, pred) = _fixture()
    specs = [SliceSpec("overall", {}), SliceSpec("night", {"illumination": "night"}),
             SliceSpec("vru", {}, ("pedestrian", "cyclist")), SliceSpec("night_rain", {"illumination": "night", "weather": "rain"})]
    m = slice_metrics(frames, gt, pred, specs).set_index("slice")
    # overall: 5 objects, 3 matched; 5 predictions, 3 true positives
    assert (m.loc["overall", "objects"], m.loc["overall", "matched"]) == (5, 3)
    assert m.loc["overall", "recall"] == pytest.approx(0.6)
    assert m.loc["overall", "recall_lower"] == pytest.approx(wilson_lower(3, 5))
    assert m.loc["overall", "precision"] == pytest.approx(0.6)
    # night: frames 1 and 2 -> 3 objects (car found, pedestrian and cyclist missed)
    assert (m.loc["night", "frames"], m.loc["night", "objects"], m.loc["night", "matched"]) == (2, 3, 1)
    # VRUs: pedestrian + cyclist, none matched; 1 pedestrian prediction, a false positive
    assert (m.loc["vru", "objects"], m.loc["vru", "matched"], m.loc["vru", "predictions"]) == (2, 0, 1)
    assert m.loc["vru", "recall_lower"] == 0.0
    assert m.loc["night_rain", "objects"] == 1 and m.loc["night_rain", "recall"] == 0.0


def test_gates_fail_with_evidence_and_pass_when_met(tmp_path):
    policy_file = tmp_path / "gates.yaml"
    policy_file.write_text("""
bound: wilson
confidence: 0.95
gates:
  overall: {where: {}, metric: recall, min_lower_bound: 0.2, min_samples: 5, max_regression: 0.05}
  night:   {where: {illumination: night}, metric: recall, min_lower_bound: 0.2, min_samples: 3, max_regression: 0.5}
  fog:     {where: {weather: fog}, metric: recall, min_lower_bound: 0.1, min_samples: 1, max_regression: 0.5}
""")
    policy = load_gate_policy(policy_file)
    frames, (gt, pred) = _fixture()
    cand = slice_metrics(frames, gt, pred, policy.slices, policy.bound, policy.confidence)
    results = {r.gate: r for r in evaluate_gates(policy, cand)}
    assert results["overall"].passed, results["overall"].reason  # lower bound of 3/5 is 0.231 > 0.2
    assert not results["night"].passed and "lower bound" in results["night"].reason
    assert results["night"].samples == 3 and results["night"].threshold == 0.2
    assert not results["fog"].passed and "only 0 samples" in results["fog"].reason
    # regression against production: production found 5/5 overall
    prod = cand.copy()
    prod.loc[prod["slice"] == "overall", "recall"] = 1.0
    again = {r.gate: r for r in evaluate_gates(policy, cand, prod)}
    assert not again["overall"].passed and "regressed by 0.400" in again["overall"].reason
    assert again["overall"].to_dict()["production_value"] == 1.0


def test_project_gate_policy_loads():
    policy = load_gate_policy()
    names = {g.slice.name for g in policy.gates}
    assert {"night", "rain", "vru", "night_rain"} <= names
    assert all(0 <= g.min_lower_bound <= 1 and g.min_samples >= 1 for g in policy.gates)
