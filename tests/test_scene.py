"""Procedural sensor scenes: determinism, geometry and that conditions change the data."""

from __future__ import annotations

import numpy as np
import pytest

from avops.fleet.scene import (
    CLASSES,
    ILLUMINATIONS,
    ROAD_TYPES,
    WEATHERS,
    CameraFrame,
    Odd,
    SceneObject,
    contact_sheet,
    draw_boxes,
    render_camera,
    render_lidar,
    render_radar,
    sample_objects,
    step_objects,
)

DAY = Odd("day", "clear", "rural", False)


def car(x: float, y: float = 0.0, vx: float = 0.0, track_id: int = 1, cls: str = "car") -> SceneObject:
    dims = {"car": (4.5, 1.8, 1.5), "truck": (10.0, 2.5, 3.8), "pedestrian": (0.4, 0.6, 1.8)}[cls]
    return SceneObject(track_id, cls, x, y, *dims, vx=vx, vy=0.0)


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def all_odds() -> list[Odd]:
    return [Odd(i, w, r, rw) for i in ILLUMINATIONS for w in WEATHERS for r in ROAD_TYPES for rw in (False, True)]


def test_same_seed_same_bytes_different_seed_differs() -> None:
    odd = Odd("night", "rain", "urban", True)

    def run(seed: int) -> tuple:
        r = rng(seed)
        objs = sample_objects(r, odd)
        fr = render_camera(r, objs, odd)
        return objs, fr, render_lidar(r, objs, odd), render_radar(r, objs, odd, 12.0)

    a, b, c = run(3), run(3), run(4)
    assert a[0] == b[0]
    assert a[1].image.tobytes() == b[1].image.tobytes()
    assert a[1].boxes.tobytes() == b[1].boxes.tobytes() and a[1].classes == b[1].classes
    assert a[2].tobytes() == b[2].tobytes()
    assert a[3] == b[3]
    assert a[1].image.tobytes() != c[1].image.tobytes()
    assert a[2].tobytes() != c[2].tobytes()


def test_frames_are_well_formed_across_all_conditions() -> None:
    r = rng(1)
    n_boxes = 0
    for odd in all_odds():
        objs = sample_objects(r, odd)
        fr = render_camera(r, objs, odd)
        assert fr.image.dtype == np.uint8 and fr.image.shape == (96, 96, 3)
        k = len(fr.classes)
        assert fr.boxes.shape == (k, 4) and fr.boxes.dtype == np.float32
        assert len(fr.track_ids) == k and fr.occlusion.shape == (k,)
        assert set(fr.classes) <= set(CLASSES)
        assert set(fr.track_ids) <= {o.track_id for o in objs}
        if k:
            assert (fr.boxes >= 0).all() and (fr.boxes <= 96).all()
            assert (fr.boxes[:, 2] > fr.boxes[:, 0]).all()
            assert (fr.boxes[:, 3] - fr.boxes[:, 1] >= 4.0).all()
            assert ((fr.occlusion >= 0) & (fr.occlusion <= 1)).all()
        n_boxes += k
    assert n_boxes > 30  # the scenes are not empty by accident


def test_size_parameter() -> None:
    fr = render_camera(rng(), [car(8.0)], DAY, size=64)
    assert fr.image.shape == (64, 64, 3) and (fr.boxes <= 64).all() and fr.classes == ["car"]


def test_closer_objects_have_larger_boxes() -> None:
    areas = []
    for x in (7.0, 10.0, 15.0):
        fr = render_camera(rng(), [car(x)], DAY)
        assert fr.classes == ["car"]
        (x0, y0, x1, y1), = fr.boxes
        assert 40 < (x0 + x1) / 2 < 56  # straight ahead is the image centre
        areas.append((x1 - x0) * (y1 - y0))
    assert areas[0] > areas[1] > areas[2]


def test_object_left_of_ego_is_left_in_image() -> None:
    fr = render_camera(rng(), [car(12.0, y=3.5, track_id=1), car(12.0, y=-3.5, track_id=2)], DAY)
    cx = {t: (b[0] + b[2]) / 2 for t, b in zip(fr.track_ids, fr.boxes)}
    assert cx[1] < 48 < cx[2]


def test_far_and_hidden_objects_get_no_box() -> None:
    fr = render_camera(rng(), [car(60.0)], DAY)
    assert fr.classes == []  # ~1 px tall at 60 m
    fr = render_camera(rng(), [car(8.0, track_id=1), car(14.0, track_id=2)], DAY)
    assert fr.track_ids == [1]  # the car behind the lead car is fully hidden
    fr = render_camera(rng(), [car(8.0, y=1.0, track_id=1), car(13.0, track_id=2)], DAY)
    occ = dict(zip(fr.track_ids, fr.occlusion))
    assert occ[1] < 0.05 and 0.2 < occ[2] < 0.95


def _objects_scene() -> list[SceneObject]:
    return [car(8.0, track_id=1), car(12.0, y=3.25, vx=-15.0, track_id=2), car(9.0, y=-2.0, track_id=3,
            cls="pedestrian")]


def test_night_is_darker_than_day() -> None:
    objs = _objects_scene()
    day = render_camera(rng(5), objs, Odd("day", "clear", "urban", False)).image
    dusk = render_camera(rng(5), objs, Odd("dusk", "clear", "urban", False)).image
    night = render_camera(rng(5), objs, Odd("night", "clear", "urban", False)).image
    assert night.mean() < dusk.mean() < day.mean()
    assert night.mean() < 0.5 * day.mean()
    # The upper image (sky, facades) is dark at night; the low-beam pool is not.
    assert night[:30].mean() < 40
    assert night[80:, 35:60].mean() > 2 * night[:30].mean()


def test_fog_lowers_contrast_more_with_distance() -> None:
    near = car(6.0, y=3.5, track_id=1)
    far = car(36.0, y=-3.75, vx=20.0, track_id=2, cls="truck")
    clear_fr = render_camera(rng(6), [near, far], Odd("day", "clear", "motorway", False))
    fog = render_camera(rng(6), [near, far], Odd("day", "fog", "motorway", False)).image.astype(float)
    clear = clear_fr.image.astype(float)
    assert fog.std() < 0.85 * clear.std()

    def patch_std(img: np.ndarray, tid: int) -> float:
        x0, y0, x1, y1 = clear_fr.boxes[clear_fr.track_ids.index(tid)].astype(int)
        return float(img[y0:y1 + 1, x0:x1 + 1].std())

    near_ratio = patch_std(fog, 1) / patch_std(clear, 1)
    far_ratio = patch_std(fog, 2) / patch_std(clear, 2)
    assert far_ratio < 0.5 and far_ratio < 0.7 * near_ratio


def test_rain_darker_snow_brighter_ground() -> None:
    objs = [car(10.0)]
    img = {w: render_camera(rng(7), objs, Odd("day", w, "rural", False)).image.astype(float) for w in WEATHERS}
    assert img["rain"].mean() < img["clear"].mean()
    assert img["snow"][60:].mean() > img["clear"][60:].mean() + 20
    # Rain streaks and snow flakes add high-frequency detail over the same scene.
    def hf(a: np.ndarray) -> float:
        return float(np.abs(np.diff(a.mean(axis=2), axis=0)).mean())

    assert hf(img["snow"]) > hf(img["clear"])


def test_classes_look_different() -> None:
    """Cone pixels are orange, cars are not: a learnable colour cue exists."""
    cone = SceneObject(1, "traffic_cone", 5.0, 0.0, 0.4, 0.4, 0.9, 0.0, 0.0)
    fr = render_camera(rng(), [cone], DAY)
    (x0, y0, x1, y1), = fr.boxes
    patch = fr.image[int(y0):int(y1), int(x0):int(x1)].astype(int)
    orange = (patch[..., 0] > 180) & (patch[..., 1] > 60) & (patch[..., 1] < 160) & (patch[..., 2] < 80)
    assert orange.sum() >= 5
    ped = render_camera(rng(), [car(6.0, cls="pedestrian")], DAY).boxes[0]
    truck = render_camera(rng(), [car(14.0, cls="truck")], DAY).boxes[0]
    aspect = lambda b: (b[3] - b[1]) / (b[2] - b[0])  # noqa: E731
    assert aspect(ped) > 2.0 and aspect(truck) > 1.0


def test_lidar_hits_object_ahead() -> None:
    obj = car(15.0)
    box_lo = np.array([obj.x - obj.length / 2 - 0.1, -obj.width / 2 - 0.1, 0.1])
    box_hi = np.array([obj.x + obj.length / 2, obj.width / 2, obj.height]) + 0.1

    def inside(pts: np.ndarray) -> int:
        return int(((pts[:, :3] >= box_lo) & (pts[:, :3] <= box_hi)).all(axis=1).sum())

    pts = render_lidar(rng(), [obj], DAY)
    assert pts.dtype == np.float32 and pts.shape[1] == 4
    assert 2000 <= len(pts) <= 5000
    assert inside(pts) >= 5
    hits = pts[((pts[:, :3] >= box_lo) & (pts[:, :3] <= box_hi)).all(axis=1)]
    assert np.abs(hits[:, 0].min() - (obj.x - obj.length / 2)) < 0.15  # rear face
    on_surface = (hits[:, 0] < obj.x - obj.length / 2 + 0.15) | (hits[:, 2] > obj.height - 0.15)
    assert on_surface.all()  # rear face or roof, nothing inside the box
    assert inside(render_lidar(rng(), [], DAY)) == 0
    ground = pts[np.hypot(pts[:, 0], pts[:, 1]) < 10]
    assert np.abs(ground[:, 2]).max() < 0.1


def test_lidar_weather_drops_far_returns_and_adds_near_clutter() -> None:
    clear = render_lidar(rng(2), [], DAY)
    fog = render_lidar(rng(2), [], Odd("day", "fog", "rural", False))
    r_clear, r_fog = np.linalg.norm(clear[:, :2], axis=1), np.linalg.norm(fog[:, :2], axis=1)
    assert (r_fog > 20).sum() < 0.5 * (r_clear > 20).sum()
    near_sky = lambda p: int(((p[:, 2] > 2.0) & (np.linalg.norm(p[:, :3], axis=1) < 10)).sum())  # noqa: E731
    assert near_sky(clear) == 0 and near_sky(fog) > 20


@pytest.mark.parametrize("weather", ["clear", "fog", "snow"])
def test_radar_range_and_doppler(weather: str) -> None:
    odd = Odd("day", weather, "rural", False)
    objs = [car(30.0, vx=0.0, track_id=1), car(50.0, y=-0.2, vx=30.0, track_id=2)]
    objs[1] = SceneObject(2, "car", 50.0, 3.25, 4.5, 1.8, 1.5, vx=30.0, vy=0.0)
    dets = render_radar(rng(3), objs, odd, ego_speed=15.0)
    assert dets == sorted(dets, key=lambda d: d["range_m"])
    for d in dets:
        assert set(d) == {"range_m", "azimuth_deg", "range_rate_mps", "rcs_dbsm", "snr_db"}
    for o, sign in ((objs[0], -1.0), (objs[1], 1.0)):
        true_r = np.hypot(o.x - o.length / 2, max(0.0, abs(o.y) - o.width / 2))
        close = [d for d in dets if abs(d["range_m"] - true_r) < 1.0 and abs(d["azimuth_deg"]) < 8.0]
        assert close, (weather, o, dets)
        assert all(np.sign(d["range_rate_mps"]) == sign for d in close)
        assert abs(close[0]["range_rate_mps"] - (o.vx - 15.0)) < 1.0


def test_radar_pedestrian_far_is_missed_car_is_not() -> None:
    ped = car(140.0, cls="pedestrian")
    vehicle = car(140.0, cls="truck", track_id=2)
    hits_ped = hits_truck = 0
    for seed in range(20):
        hits_ped += any(abs(d["range_m"] - 139.8) < 1.0 for d in render_radar(rng(seed), [ped], DAY, 10.0))
        hits_truck += any(abs(d["range_m"] - 135.0) < 1.0 for d in render_radar(rng(seed), [vehicle], DAY, 10.0))
    assert hits_ped <= 3 and hits_truck >= 17


def test_sample_objects_class_mix_by_road_type() -> None:
    r = rng(8)
    seen: dict[str, set[str]] = {}
    empty = 0
    for road in ROAD_TYPES:
        for i in range(60):
            objs = sample_objects(r, Odd("day", "clear", road, i % 4 == 0), n_max=8)
            empty += not objs
            assert len(objs) <= 8
            assert len({o.track_id for o in objs}) == len(objs)
            seen.setdefault(road, set()).update(o.cls for o in objs)
            if i % 4 == 0:
                assert any(o.cls == "traffic_cone" for o in objs)
    assert seen["motorway"] == {"car", "truck", "traffic_cone"}
    assert {"car", "pedestrian", "cyclist"} <= seen["urban"]
    assert "pedestrian" not in seen["rural"] and "cyclist" in seen["rural"]
    assert 0 < empty < 40


def test_step_objects_moves_relative_to_ego_and_drops_passed() -> None:
    parked = SceneObject(1, "car", 20.0, -2.75, 4.5, 1.8, 1.5, 0.0, 0.0)
    walker = SceneObject(2, "pedestrian", 10.0, -1.0, 0.4, 0.6, 1.8, 0.0, 1.5)
    behind = SceneObject(3, "car", 1.0, -2.75, 4.5, 1.8, 1.5, 0.0, 0.0)
    out = step_objects([parked, walker, behind], 0.5, 10.0, rng())
    by_id = {o.track_id: o for o in out}
    assert set(by_id) == {1, 2}
    assert by_id[1].x == pytest.approx(15.0) and by_id[1].y == pytest.approx(-2.75)
    assert by_id[2].y == pytest.approx(-0.25)
    # A drive keeps its tracks from frame to frame and eventually spawns new ones.
    r = rng(9)
    odd = Odd("day", "clear", "urban", False)
    objs = sample_objects(r, odd)
    ids0 = {o.track_id for o in objs}
    spawned = set()
    for _ in range(300):
        nxt = step_objects(objs, 0.1, 8.0, r, odd)
        spawned |= {o.track_id for o in nxt} - {o.track_id for o in objs}
        objs = nxt
    assert spawned and not (spawned & ids0)


def test_consecutive_frames_are_correlated() -> None:
    odd = Odd("day", "clear", "motorway", False)
    r = rng(11)
    objs = [car(12.0, vx=25.0), car(20.0, y=-3.75, vx=22.0, track_id=2, cls="truck")]
    a = render_camera(r, objs, odd, layout_seed=1, ego_s=0.0)
    b = render_camera(r, step_objects(objs, 0.05, 25.0, r), odd, layout_seed=1, ego_s=1.25)
    c = render_camera(r, objs, Odd("day", "clear", "urban", False), layout_seed=1, ego_s=0.0)
    diff = lambda p, q: np.abs(p.image.astype(int) - q.image.astype(int)).mean()  # noqa: E731
    assert diff(a, b) < 0.5 * diff(a, c)
    assert a.track_ids == b.track_ids


def test_odd_validation() -> None:
    with pytest.raises(ValueError):
        Odd("noon", "clear", "urban", False)


def test_debug_pictures() -> None:
    fr = render_camera(rng(), [car(8.0)], DAY)
    big = draw_boxes(fr, scale=3)
    assert big.shape == (288, 288, 3) and big.dtype == np.uint8
    assert not np.array_equal(big[::3, ::3], fr.image)  # outline drawn
    sheet = contact_sheet([fr, big[:96, :96], fr.image], cols=2, gap=2)
    assert sheet.shape == (2 * 98 + 2, 2 * 98 + 2, 3)
    assert isinstance(fr, CameraFrame)
