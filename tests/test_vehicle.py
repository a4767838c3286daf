"""The vehicle-side verifier: every attack is rejected with a reason; a valid package installs online and offline."""

import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import Metadata
from tuf.api.serialization.json import JSONSerializer

from avops.home import HomeLayout
from avops.ota.uptane import Uptane
from avops.vehicle.verifier import Ecu, Primary, Rejected, Sources
from tests.conftest import serve_folder

COHORT = "orin-my2024-eu"
HW = "NV-ORIN-X-64"
ENGINE = b"\x7fengine" * 500
NOW = datetime.now(timezone.utc)


@pytest.fixture()
def world(tmp_path):
    """An OTA home with one release served over HTTP on 127.0.0.1, and a provisioned ECU."""
    home = HomeLayout(tmp_path / "home")
    ota = Uptane(home)
    release = ota.release(COHORT, "perception", "orin", "engine-int8.onnx", ENGINE, "adas_domain", HW, "rollout-1")
    root = home.root / "ota"
    ecu = Primary(tmp_path / "ecu", Ecu("adas_domain", HW))
    ecu.init((root / "image/metadata/1.root.json").read_bytes(), (root / f"director/{COHORT}/metadata/1.root.json").read_bytes())
    with serve_folder(root) as url:
        yield {"home": home, "ota": ota, "release": release, "root": root, "ecu": ecu,
               "sources": Sources.online(f"{url}/image", f"{url}/director/{COHORT}"), "tmp": tmp_path}


def _rejected(world, reason: str, ecu: Primary | None = None, when: datetime = NOW) -> Rejected:
    with pytest.raises(Rejected) as exc:
        (ecu or world["ecu"]).update(world["sources"], when)
    assert exc.value.reason == reason, str(exc.value)
    return exc.value


def test_a_valid_package_verifies_and_installs_online_then_is_current(world):
    report = world["ecu"].update(world["sources"], NOW)
    assert [i.path for i in report.installed] == ["perception/orin/engine-int8.onnx"]
    installed = world["ecu"].installed()["perception"]
    assert installed.sha256 == world["release"].sha256 and installed.release_counter == 1
    assert (world["ecu"].dir / "images/perception" / f"{installed.sha256}.bin").read_bytes() == ENGINE
    again = world["ecu"].update(world["sources"], NOW)
    assert again.installed == [] and again.already_current == ["perception/orin/engine-int8.onnx"]


def test_a_valid_package_installs_offline_from_a_bundle(world):
    bundle = world["tmp"] / "bundle"
    shutil.copytree(world["root"] / "image", bundle / "image")
    shutil.copytree(world["root"] / f"director/{COHORT}", bundle / "director")
    report = world["ecu"].update(Sources.bundle(bundle), NOW)
    assert report.installed and report.installed[0].sha256 == world["release"].sha256


def test_tampered_engine_bytes_are_rejected(world):
    stored = next((world["root"] / "image/targets/perception/orin").glob(f"{world['release'].sha256}.*"))
    stored.write_bytes(ENGINE[:-1] + b"X")
    _rejected(world, "hash_mismatch")


def test_replayed_older_timestamp_is_rejected(world):
    ts = world["root"] / "image/metadata/timestamp.json"
    old = ts.read_bytes()
    world["ecu"].update(world["sources"], NOW)
    world["ota"].image().refresh_timestamp()
    world["ecu"].update(world["sources"], NOW)  # the ECU now trusts the newer timestamp
    ts.write_bytes(old)  # an attacker serves the older, validly signed one
    _rejected(world, "rollback")


def test_expired_metadata_is_rejected_by_trusted_time_even_if_the_wall_clock_is_fine(world):
    err = _rejected(world, "expired", when=NOW + timedelta(days=400))
    assert "trusted time" in str(err)


def test_a_target_signed_by_the_wrong_roles_key_is_rejected(world):
    image = world["ota"].image()
    md = image.open("perception-orin")
    md.signed.version += 1
    md.signatures.clear()
    md.sign(CryptoSigner.generate_ed25519())  # a key the delegation does not name
    (image.metadata_dir / f"{md.signed.version}.perception-orin.json").write_bytes(md.to_bytes(JSONSerializer()))
    image.publish()
    _rejected(world, "bad_signature")


def test_wrong_hardware_id_is_rejected(world):
    other = Primary(world["tmp"] / "ecu2", Ecu("adas_domain", "NV-XAVIER-AGX-32"))
    shutil.copytree(world["ecu"].dir, other.dir)
    _rejected(world, "hardware_id", ecu=other)


def test_release_counter_downgrade_is_rejected(world):
    ota = world["ota"]
    ota.release(COHORT, "perception", "orin", "engine-v2.onnx", ENGINE + b"2", "adas_domain", HW, "rollout-2")
    assert world["ecu"].update(world["sources"], NOW).installed[0].release_counter == 2
    director = ota.director(COHORT)
    with director.edit_targets() as targets:  # a director that points back to the first image, counter 1
        t = targets.targets.pop("perception/orin/engine-v2.onnx")
        t.unrecognized_fields["custom"]["release_counter"] = 1
        targets.targets["perception/orin/engine-v2.onnx"] = t
    director.publish()
    _rejected(world, "counter_downgrade")


def test_mix_and_match_of_snapshot_and_targets_is_rejected(world):
    image = world["ota"].image()
    image.add_target("perception/orin/extra.onnx", b"extra", role="perception-orin")
    image.publish()
    md = image.metadata_dir
    versions = sorted(int(p.name.split(".")[0]) for p in md.glob("*.perception-orin.json"))
    # serve an older, validly signed perception-orin under the name the current snapshot points to
    (md / f"{versions[-1]}.perception-orin.json").write_bytes((md / f"{versions[-2]}.perception-orin.json").read_bytes())
    _rejected(world, "mix_and_match")


def test_a_compromised_director_alone_cannot_install(world):
    director = world["ota"].director(COHORT)
    director.add_target("perception/orin/evil.onnx", b"evil", custom={"ecu_identifier": "adas_domain", "hardware_id": HW,
                                                                     "release_counter": 9, "rollout_id": "evil"})
    director.publish()
    _rejected(world, "not_in_image_repository")


def test_a_target_path_escaping_the_target_dir_is_rejected(world):
    director = world["ota"].director(COHORT)
    with director.edit_targets() as targets:
        t = targets.targets.pop("perception/orin/engine-int8.onnx")
        t.path = "perception/../../etc/passwd"
        targets.targets[t.path] = t
    director.publish()
    _rejected(world, "path_escape")


def test_tuf_conformance_cli_init_refresh_download(world, tmp_path):
    exe = [sys.executable, "-m", "avops.vehicle.cli"]
    md, tg = tmp_path / "cli-md", tmp_path / "cli-tg"
    url = world["sources"].image_metadata.rsplit("/metadata/", 1)[0]
    root = world["root"] / "image/metadata/1.root.json"
    run = lambda *args: subprocess.run([*exe, *args], capture_output=True, text=True, timeout=60)  # noqa: E731
    assert run("--metadata-dir", str(md), "init", str(root)).returncode == 0
    assert (md / "root.json").exists() and not (md / "1.root.json").exists()
    assert run("--metadata-dir", str(md), "--metadata-url", f"{url}/metadata", "refresh").returncode == 0
    assert (md / "timestamp.json").exists() and (md / "snapshot.json").exists()
    path = world["release"].path
    args = ["--metadata-dir", str(md), "--metadata-url", f"{url}/metadata", "--target-name", path,
            "--target-base-url", f"{url}/targets", "--target-dir", str(tg), "download"]
    assert run(*args).returncode == 0
    files = list(tg.iterdir())
    assert len(files) == 1 and files[0].read_bytes() == ENGINE
    mtime = files[0].stat().st_mtime_ns
    assert run(*args).returncode == 0 and files[0].stat().st_mtime_ns == mtime, "a present target is not fetched again"
    bad = run("--metadata-dir", str(md), "--metadata-url", f"{url}/metadata", "--target-name", "nope/x", "--target-base-url",
              f"{url}/targets", "--target-dir", str(tg), "download")
    assert bad.returncode == 1 and "not found" in bad.stderr
    assert run("--metadata-dir", str(tmp_path / "none"), "--metadata-url", f"{url}/metadata", "refresh").returncode == 1
    assert Metadata.from_bytes((md / "root.json").read_bytes()).signed.version == 1
    assert Path(files[0]).parent == tg
