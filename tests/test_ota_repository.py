"""The TUF repositories behind OTA packages, checked with python-tuf's own client over HTTP on 127.0.0.1."""

from datetime import datetime, timedelta, timezone

import pytest
from tuf.api.exceptions import ExpiredMetadataError
from tuf.ngclient import Updater

from avops.ota.keys import KeyRing
from avops.ota.repository import FileRepository
from tests.conftest import serve_folder

ENGINE = b"\x00engine-bytes" * 100


@pytest.fixture()
def served(tmp_path):
    """An HTTP server on 127.0.0.1 serving ``tmp_path/repo``."""
    root = tmp_path / "repo"
    root.mkdir()
    with serve_folder(root) as url:
        yield root, url


def _client(tmp_path, repo: FileRepository, url: str, name: str = "client", trusted_root: bytes | None = None) -> Updater:
    md = tmp_path / name / "metadata"
    md.mkdir(parents=True, exist_ok=True)
    (tmp_path / name / "targets").mkdir(exist_ok=True)
    return Updater(str(md), f"{url}/metadata/", str(tmp_path / name / "targets"), f"{url}/targets/",
                   bootstrap=trusted_root or (repo.metadata_dir / "1.root.json").read_bytes())


def _updater(folder, base_url: str, trusted_root: bytes) -> Updater:
    (folder / "metadata").mkdir(parents=True)
    (folder / "targets").mkdir()
    return Updater(str(folder / "metadata"), f"{base_url}/metadata/", str(folder / "targets"), f"{base_url}/targets/",
                   bootstrap=trusted_root)


def _image_repo(tmp_path, served) -> FileRepository:
    root, _ = served
    repo = FileRepository(root, KeyRing(tmp_path / "keys"), "image")
    repo.init()
    repo.delegate("perception-orin", ["perception/orin/*"])
    return repo


def test_a_plain_tuf_client_downloads_a_target_of_a_delegated_role(tmp_path, served):
    repo = _image_repo(tmp_path, served)
    repo.add_target("perception/orin/engine-int8.onnx", ENGINE, role="perception-orin", custom={"precision": "int8"})
    repo.publish()
    up = _client(tmp_path, repo, served[1])
    up.refresh()
    info = up.get_targetinfo("perception/orin/engine-int8.onnx")
    assert info is not None and info.custom == {"precision": "int8"}
    assert open(up.download_target(info), "rb").read() == ENGINE
    root = repo.root()
    assert root.roles["root"].threshold == 2 and len(root.roles["root"].keyids) == 2, "root is threshold-signed"
    assert root.roles["targets"].threshold == 2
    delegated = repo.targets().delegations.roles["perception-orin"]
    assert delegated.terminating and delegated.paths == ["perception/orin/*"]


def test_a_delegated_role_cannot_sign_outside_its_paths(tmp_path, served):
    repo = _image_repo(tmp_path, served)
    repo.add_target("perception/xavier/engine.onnx", ENGINE, role="perception-orin")  # signed by the wrong role
    repo.publish()
    up = _client(tmp_path, repo, served[1])
    up.refresh()
    assert up.get_targetinfo("perception/xavier/engine.onnx") is None


def test_private_keys_are_0600_and_a_readable_key_is_refused(tmp_path, served):
    repo = _image_repo(tmp_path, served)
    pems = list((tmp_path / "keys").rglob("*.pem"))
    assert pems and all(p.stat().st_mode & 0o777 == 0o600 for p in pems)
    assert (tmp_path / "keys").stat().st_mode & 0o777 == 0o700
    target_key = next(p for p in pems if "/image/timestamp/" in str(p))
    target_key.chmod(0o644)
    with pytest.raises(PermissionError, match="chmod 600"):
        repo.refresh_timestamp()


def test_root_rotation_is_followed_by_a_client_that_trusts_the_old_root(tmp_path, served):
    repo = _image_repo(tmp_path, served)
    first_root = (repo.metadata_dir / "1.root.json").read_bytes()
    old = set(repo.root().roles["root"].keyids)
    new = repo.rotate_root()
    assert set(repo.root().roles["root"].keyids) == set(new) and not old & set(new)
    repo.add_target("perception/orin/engine.onnx", ENGINE, role="perception-orin")
    repo.publish()
    up = _client(tmp_path, repo, served[1], trusted_root=first_root)
    up.refresh()  # walks 1.root -> 2.root (signed by old and new keys) -> ... and trusts the new keys
    assert up.get_targetinfo("perception/orin/engine.onnx") is not None
    md = tmp_path / "client" / "metadata" / "root.json"
    assert b'"version": ' + str(repo.root().version).encode() in md.read_bytes()


def test_expired_timestamp_is_rejected_by_the_client(tmp_path, served):
    root, url = served
    stale = datetime.now(timezone.utc).replace(microsecond=0) - timedelta(days=3)
    repo = FileRepository(root, KeyRing(tmp_path / "keys"), "image", clock=lambda: stale)
    repo.init()
    up = _client(tmp_path, repo, url)
    with pytest.raises(ExpiredMetadataError):
        up.refresh()


def test_director_and_image_agree_on_a_release_and_counters_only_grow(tmp_path, served):
    from avops.home import HomeLayout
    from avops.ota.uptane import Uptane

    root, url = served
    home = HomeLayout(root.parent / "home")
    ota = Uptane(home)
    r1 = ota.release("orin-my2024-eu", "perception", "orin", "engine-fp16.plan", ENGINE, "adas_domain", "NV-ORIN-X-64", "rollout-1")
    r2 = ota.release("orin-my2024-eu", "perception", "orin", "engine-int8.plan", ENGINE + b"2", "adas_domain", "NV-ORIN-X-64", "rollout-2")
    assert (r1.release_counter, r2.release_counter) == (1, 2)
    director = ota.director("orin-my2024-eu").targets().targets
    assert list(director) == ["perception/orin/engine-int8.plan"], "the director points the ECU at one image per component"
    custom = director["perception/orin/engine-int8.plan"].unrecognized_fields["custom"]
    assert custom == {"ecu_identifier": "adas_domain", "hardware_id": "NV-ORIN-X-64", "release_counter": 2, "rollout_id": "rollout-2"}
    # both repositories through a plain TUF client: same length and hashes for the directed target
    import shutil

    shutil.copytree(home.root / "ota", root / "ota")
    img = _updater(tmp_path / "image-client", f"{url}/ota/image", (home.root / "ota/image/metadata/1.root.json").read_bytes())
    d = _updater(tmp_path / "director-client", f"{url}/ota/director/orin-my2024-eu",
                 (home.root / "ota/director/orin-my2024-eu/metadata/1.root.json").read_bytes())
    img.refresh()
    d.refresh()
    a, b = img.get_targetinfo(r2.path), d.get_targetinfo(r2.path)
    assert a.length == b.length and a.hashes == b.hashes and a.custom["hardware_ids"] == ["NV-ORIN-X-64"]
    assert b.custom["release_counter"] == 2


def test_image_targets_are_immutable(tmp_path):
    from avops.home import HomeLayout
    from avops.ota.uptane import Uptane

    ota = Uptane(HomeLayout(tmp_path / "home"))
    ota.release("c1", "perception", "orin", "engine.onnx", ENGINE, "adas_domain", "HW", "r1")
    ota.release("c2", "perception", "orin", "engine.onnx", ENGINE, "adas_domain", "HW", "r2")  # same bytes: fine
    with pytest.raises(ValueError, match="immutable"):
        ota.release("c3", "perception", "orin", "engine.onnx", ENGINE + b"!", "adas_domain", "HW", "r3")


def test_an_image_released_to_several_cohorts_stays_allowed_on_each_ones_hardware(tmp_path):
    """Two cohorts whose gateways differ in hardware share one image: the second release must not revoke the first's."""
    from avops.home import HomeLayout
    from avops.ota.uptane import Uptane

    ota = Uptane(HomeLayout(tmp_path / "home"))
    ota.release("c1", "maintenance", "s32g3", "m.onnx", ENGINE, "gateway", "GW-A", "r1")
    ota.release("c2", "maintenance", "s32g3", "m.onnx", ENGINE, "gateway", "GW-B", "r2")
    target = ota.image().targets("maintenance-s32g3").targets["maintenance/s32g3/m.onnx"]
    assert target.unrecognized_fields["custom"]["hardware_ids"] == ["GW-A", "GW-B"]


def test_a_repository_killed_during_its_first_init_is_completed_by_the_next_publish(tmp_path, served):
    """SIGKILL after root was written but before targets, snapshot and timestamp: the next writer must not be stuck
    (``exists()`` is already true), and a plain TUF client must then verify and download from it."""
    root_dir, url = served
    repo = FileRepository(root_dir, KeyRing(tmp_path / "keys"), "image")
    with repo.edit_root() as root:  # the first step of init(), then the process died
        root.consistent_snapshot = True
        for role, (n, threshold) in {"root": (2, 2), "targets": (2, 2), "snapshot": (1, 1), "timestamp": (1, 1)}.items():
            for key in repo.keys.generate(repo._key_role(role), n):
                root.add_key(key, role)
            root.roles[role].threshold = threshold
    assert repo.exists() and not (repo.metadata_dir / "timestamp.json").exists()
    again = FileRepository(root_dir, KeyRing(tmp_path / "keys"), "image")  # the retry, in a new process
    again.add_target("perception/orin/engine.onnx", ENGINE)
    again.publish()
    up = _client(tmp_path, again, url)
    up.refresh()
    assert open(up.download_target(up.get_targetinfo("perception/orin/engine.onnx")), "rb").read() == ENGINE
