"""Full verification, as an Uptane primary does it, before anything is installed.

1. The director's metadata through the TUF client workflow (root chain, timestamp, snapshot,
   targets: signatures, thresholds, versions never going back, expiry).
2. The image repository's metadata the same way, with delegations resolved.
3. For each target the director assigns to this ECU: the image repository must have it too,
   with the same length and hashes (a compromised director alone cannot install anything);
   the hardware id must be this ECU's (in the director's and the image's metadata); the release
   counter must not be lower than what is installed; the path must stay inside the target dir.
4. Expiry against a trusted time passed in (e.g. a time server or the vehicle's secure clock),
   not only the wall clock: a car whose clock was set back must not accept stale metadata.
5. The download is checked against the hashes and length; the installed state is updated
   atomically.

Every rejection is a :class:`Rejected` with a reason code and a sentence.
"""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater

from avops.store import atomic_write_json
from avops.vehicle.fetch import FileFetcher, bundle_urls


class Rejected(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


@dataclass
class Ecu:
    ecu_identifier: str
    hardware_id: str
    vehicle_id: str | None = None  # staged rollouts name the vehicles an assignment is for


@dataclass
class Installed:
    path: str
    sha256: str
    length: int
    release_counter: int
    rollout_id: str
    installed_at: str


@dataclass
class Sources:
    image_metadata: str
    image_targets: str
    director_metadata: str
    director_targets: str
    offline: bool = False

    @classmethod
    def online(cls, image_url: str, director_url: str) -> "Sources":
        i, d = image_url.rstrip("/"), director_url.rstrip("/")
        return cls(f"{i}/metadata/", f"{i}/targets/", f"{d}/metadata/", f"{d}/targets/")

    @classmethod
    def bundle(cls, folder: Path) -> "Sources":
        return cls(**bundle_urls(folder), offline=True)


@dataclass
class Report:
    ecu: Ecu
    installed: list[Installed] = field(default_factory=list)
    already_current: list[str] = field(default_factory=list)


class Primary:
    """An ECU's verifier with its state folder: trusted roots, metadata, installed images, downloads."""

    def __init__(self, state_dir: Path, ecu: Ecu) -> None:
        self.dir = Path(state_dir)
        self.ecu = ecu

    def init(self, image_root: bytes, director_root: bytes) -> None:
        """Provision the trusted roots (at the factory, or by a previous verified update)."""
        for name, data in (("image", image_root), ("director", director_root)):
            Metadata.from_bytes(data)  # must parse as metadata
            d = self.dir / name / "metadata"
            d.mkdir(parents=True, exist_ok=True)
            (d / "root.json").write_bytes(data)

    # -- state -----------------------------------------------------------------------
    @property
    def _state_file(self) -> Path:
        return self.dir / "installed.json"

    def installed(self) -> dict[str, Installed]:
        if not self._state_file.exists():
            return {}
        return {k: Installed(**v) for k, v in json.loads(self._state_file.read_text()).items()}

    def _updater(self, name: str, md_url: str, tg_url: str, offline: bool) -> Updater:
        md = self.dir / name / "metadata"
        if not (md / "root.json").exists():
            raise Rejected("not_provisioned", f"no trusted {name} root in {md}: run `avops-vehicle uptane init` first")
        (self.dir / name / "targets").mkdir(parents=True, exist_ok=True)
        return Updater(str(md), md_url, str(self.dir / name / "targets"), tg_url, fetcher=FileFetcher() if offline else None,
                       bootstrap=None)

    # -- the update cycle -------------------------------------------------------------
    def update(self, sources: Sources, trusted_time: datetime) -> Report:
        if trusted_time.tzinfo is None:
            raise ValueError("trusted_time must be timezone-aware (UTC)")
        director = self._updater("director", sources.director_metadata, sources.director_targets, sources.offline)
        image = self._updater("image", sources.image_metadata, sources.image_targets, sources.offline)
        # The two repositories are independent until the match step: refresh them side by side.
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = {name: pool.submit(_tuf, f"{name} metadata", up.refresh, "rollback")
                       for name, up in (("director", director), ("image", image))}
            for name, fut in futures.items():
                fut.result()
                self._check_expiry(name, trusted_time)
        assigned = self._assigned()
        report = Report(self.ecu)
        installed = self.installed()
        for path, dinfo in sorted(assigned.items()):
            custom = dinfo.custom or {}
            component = path.split("/", 1)[0]
            _safe_path(path)
            if custom.get("hardware_id") != self.ecu.hardware_id:
                raise Rejected("hardware_id", f"{path} is for hardware {custom.get('hardware_id')!r}; this ECU is {self.ecu.hardware_id!r}")
            counter = int(custom.get("release_counter", -1))
            current = installed.get(component)
            if current is not None and counter < current.release_counter:
                raise Rejected("counter_downgrade", f"{path} has release counter {counter}, lower than the installed {current.release_counter}")
            iinfo = _tuf(f"image metadata for {path}", lambda: image.get_targetinfo(path), version_reason="mix_and_match")
            if iinfo is None:
                raise Rejected("not_in_image_repository", f"the director assigns {path}, which the image repository does not list "
                                                          "(a director alone cannot install anything)")
            if iinfo.length != dinfo.length or iinfo.hashes != dinfo.hashes:
                raise Rejected("director_image_mismatch", f"{path}: director and image repository disagree on length or hashes")
            hw = (iinfo.custom or {}).get("hardware_ids")
            if hw is not None and self.ecu.hardware_id not in hw:
                raise Rejected("hardware_id", f"the image repository does not allow {path} on {self.ecu.hardware_id!r} (only {hw})")
            sha = iinfo.hashes["sha256"]
            if current is not None and current.sha256 == sha and counter == current.release_counter:
                report.already_current.append(path)
                continue
            try:
                local = image.find_cached_target(iinfo) or image.download_target(iinfo)
            except tuf_errors.LengthOrHashMismatchError as exc:
                raise Rejected("hash_mismatch", f"{path}: downloaded bytes do not match the signed hashes: {exc}") from exc
            except tuf_errors.DownloadError as exc:
                raise Rejected("unreachable", f"{path}: download failed: {exc}") from exc
            dest = self.dir / "images" / component
            dest.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(local, dest / f"{sha}.bin")
            installed[component] = Installed(path, sha, iinfo.length, counter, str(custom.get("rollout_id", "")),
                                             trusted_time.astimezone(timezone.utc).isoformat())
            report.installed.append(installed[component])
        atomic_write_json(self._state_file, {k: asdict(v) for k, v in installed.items()})
        return report

    def _assigned(self) -> dict:
        """The director's targets for this ECU (read from the metadata the client just verified)."""
        from tuf.api.metadata import TargetFile

        md = Metadata.from_bytes((self.dir / "director" / "metadata" / "targets.json").read_bytes())
        out: dict[str, TargetFile] = {}
        for path, t in md.signed.targets.items():
            custom = t.unrecognized_fields.get("custom", {})
            allow = custom.get("vehicles")
            if allow is not None and self.ecu.vehicle_id not in allow:
                continue  # a staged rollout that has not reached this vehicle yet
            if custom.get("ecu_identifier") == self.ecu.ecu_identifier:
                out[path] = t
        return out

    def _check_expiry(self, name: str, trusted_time: datetime) -> None:
        for role in ("root", "timestamp", "snapshot", "targets"):
            p = self.dir / name / "metadata" / f"{role}.json"
            if p.exists():
                md = Metadata.from_bytes(p.read_bytes())
                if md.signed.is_expired(trusted_time):
                    raise Rejected("expired", f"{name} {role} expired at {md.signed.expires.isoformat()} "
                                              f"(trusted time {trusted_time.isoformat()})")


def _tuf(what: str, call, version_reason: str):
    """Run a TUF client step; its failures become rejections with a reason code."""
    try:
        return call()
    except tuf_errors.ExpiredMetadataError as exc:
        raise Rejected("expired", f"{what} expired: {exc}") from exc
    except tuf_errors.BadVersionNumberError as exc:  # includes EqualVersionNumberError
        why = ("older than what this ECU already trusts" if version_reason == "rollback"
               else "not the version the snapshot lists (mix-and-match)")
        raise Rejected(version_reason, f"{what} {why}: {exc}") from exc
    except tuf_errors.UnsignedMetadataError as exc:
        raise Rejected("bad_signature", f"{what} not signed by the keys it must be: {exc}") from exc
    except tuf_errors.LengthOrHashMismatchError as exc:
        raise Rejected("mix_and_match", f"{what} does not match the length/hashes its parent lists: {exc}") from exc
    except tuf_errors.RepositoryError as exc:
        raise Rejected("repository", f"{what} rejected: {exc}") from exc
    except tuf_errors.DownloadError as exc:
        raise Rejected("unreachable", f"{what}: repository not reachable: {exc}") from exc


def _safe_path(path: str) -> None:
    parts = path.split("/")
    if path.startswith("/") or any(p in ("", ".", "..") for p in parts) or "\\" in path:
        raise Rejected("path_escape", f"target path {path!r} would leave the target directory")
