import os
import time

import dagster as dg

from avops.landing import LandingCursor, scan_new
from avops_assets.partitions import COHORTS
from resources import AvopsHome, FleetRegistryResource
from sensors.landing_zone import landing_zone_sensor


def _evaluate(home, registry_path, instance, cursor=None):
    ctx = dg.build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"avops_home": AvopsHome(root=str(home.root)), "fleet": FleetRegistryResource(path=str(registry_path))},
    )
    return landing_zone_sensor(ctx)


def _touch(path, data=b"x"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)


def test_new_files_request_one_run_per_cohort_and_old_files_none(tiny_home, tiny_registry_path):
    instance = dg.DagsterInstance.ephemeral()
    first = _evaluate(tiny_home, tiny_registry_path, instance)
    assert sorted(r.partition_key for r in first.run_requests) == ["orin-my2024-eu", "xavier-my2022-us"]
    added = first.dynamic_partitions_requests[0]
    assert added.partitions_def_name == COHORTS and sorted(added.partition_keys) == ["orin-my2024-eu", "xavier-my2022-us"]
    instance.add_dynamic_partitions(COHORTS, list(added.partition_keys))

    again = _evaluate(tiny_home, tiny_registry_path, instance, first.cursor)
    assert not again.run_requests, "files already seen must not trigger runs"

    time.sleep(0.01)
    _touch(tiny_home.landing / "xavier-my2022-us" / "xavier-my2022-us-v001" / "new_drive.blf")
    _touch(tiny_home.landing / "xavier-my2022-us" / "xavier-my2022-us-v002" / "another.asc")
    _touch(tiny_home.landing / "xavier-my2022-us" / "xavier-my2022-us-v002" / ".upload.mcap.partial")
    third = _evaluate(tiny_home, tiny_registry_path, instance, again.cursor)
    assert [r.partition_key for r in third.run_requests] == ["xavier-my2022-us"]
    assert third.run_requests[0].tags["avops/new_files"] == "2"
    assert not third.dynamic_partitions_requests, "known partitions are not added again"


def test_unknown_cohort_folder_requests_nothing(tiny_home, tiny_registry_path):
    instance = dg.DagsterInstance.ephemeral()
    first = _evaluate(tiny_home, tiny_registry_path, instance)
    _touch(tiny_home.landing / "not-in-registry" / "v1" / "drive.mcap")
    second = _evaluate(tiny_home, tiny_registry_path, instance, first.cursor)
    assert not second.run_requests


def test_cursor_tick_over_ten_thousand_files(tmp_path):
    landing = tmp_path / "landing"
    for c in range(4):
        for v in range(50):
            d = landing / f"cohort-{c}" / f"v{v:03d}"
            d.mkdir(parents=True)
            for i in range(50):
                (d / f"drive{i:03d}.blf").write_bytes(b"")
    t0 = time.monotonic()
    new, cursor = scan_new(landing, LandingCursor())
    first_s = time.monotonic() - t0
    assert sum(len(v) for v in new.values()) == 10_000
    t0 = time.monotonic()
    new2, cursor2 = scan_new(landing, LandingCursor.from_json(cursor.to_json()))
    assert new2 == {} and cursor2.watermark_ns == cursor.watermark_ns
    # one more file lands in one vehicle folder: only that one is reported
    time.sleep(0.01)
    extra = landing / "cohort-2" / "v007" / "late.blf"
    extra.write_bytes(b"")
    new3, _ = scan_new(landing, cursor2)
    assert new3 == {"cohort-2": [os.path.join("cohort-2", "v007", "late.blf")]}
    # Dagster's sensor limit is 60 s; a full tick here takes well under a second or two.
    assert first_s < 30 and time.monotonic() - t0 < 30


def test_review_returns_trigger_a_curated_set_rebuild(tmp_path):
    from avops.home import HomeLayout
    from sensors.review_returns import review_returns_sensor

    home = HomeLayout(tmp_path / "home")
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(COHORTS, ["orin-my2024-eu"])

    def tick(cursor=None):
        ctx = dg.build_sensor_context(instance=instance, cursor=cursor, resources={"avops_home": AvopsHome(root=str(home.root))})
        return review_returns_sensor(ctx)

    first = tick()
    assert not first.run_requests
    _touch(home.root / "review" / "returns" / "orin-my2024-eu" / "drive1.review.abc.json", b"{}")
    _touch(home.root / "review" / "returns" / "unknown-cohort" / "x.json", b"{}")
    second = tick(first.cursor)
    assert [r.partition_key for r in second.run_requests] == ["orin-my2024-eu"]
    assert not tick(second.cursor).run_requests
