"""A TUF repository in a folder, written with python-tuf's Metadata API.

Layout (what a TUF client fetches, consistent snapshots): ``metadata/<version>.<role>.json``
for root, targets, snapshot and delegated roles, ``metadata/timestamp.json``, and
``targets/<sha256>.<name>`` under each target's directory. Every file is written atomically
and never rewritten: a new version is a new file.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path

from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.api.serialization.json import JSONSerializer
from tuf.repository import Repository

from avops.ota.keys import KeyRing
from avops.store import atomic_write_bytes

TOP = (Root.type, Targets.type, Snapshot.type, Timestamp.type)
DEFAULT_EXPIRY = {Root.type: timedelta(days=365), Targets.type: timedelta(days=90), Snapshot.type: timedelta(days=7),
                  Timestamp.type: timedelta(days=1)}
DELEGATED_EXPIRY = timedelta(days=30)
_VERSIONED = re.compile(r"^(\d+)\.(.+)\.json$")


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


class FileRepository(Repository):
    """One TUF repository (the image repository, or one director repository) on disk.

    Keys come from a :class:`KeyRing` under ``<name>/<role>``; ``close`` signs a new version
    with every current key of the role, so a threshold of offline keys is met when they are all
    present, and a root rotation is signed by the outgoing and the incoming keys.
    """

    def __init__(self, folder: Path, keys: KeyRing, name: str, expiry: dict[str, timedelta] | None = None,
                 clock=_now) -> None:
        self.folder = Path(folder)
        self.keys = keys
        self.name = name
        self.expiry = {**DEFAULT_EXPIRY, **(expiry or {})}
        self.clock = clock

    # -- storage -------------------------------------------------------------------------
    @property
    def metadata_dir(self) -> Path:
        return self.folder / "metadata"

    @property
    def targets_dir(self) -> Path:
        return self.folder / "targets"

    def _versions(self, role: str) -> list[int]:
        if not self.metadata_dir.exists():
            return []
        out = []
        for p in self.metadata_dir.iterdir():
            m = _VERSIONED.match(p.name)
            if m and m.group(2) == role:
                out.append(int(m.group(1)))
        return sorted(out)

    def _path(self, role: str, version: int) -> Path:
        return self.metadata_dir / ("timestamp.json" if role == Timestamp.type else f"{version}.{role}.json")

    def exists(self) -> bool:
        return bool(self._versions(Root.type))

    def open(self, role: str) -> Metadata:
        if role == Timestamp.type:
            p = self.metadata_dir / "timestamp.json"
            if p.exists():
                return Metadata.from_bytes(p.read_bytes())
        else:
            versions = self._versions(role)
            if versions:
                return Metadata.from_bytes(self._path(role, versions[-1]).read_bytes())
        signed = {Root.type: Root, Targets.type: Targets, Snapshot.type: Snapshot, Timestamp.type: Timestamp}.get(role, Targets)()
        signed.version = 0  # close() makes it version 1
        return Metadata(signed)

    def _key_role(self, role: str) -> str:
        return f"{self.name}/{role}"

    def close(self, role: str, md: Metadata) -> None:
        md.signed.version += 1
        md.signed.expires = self.clock() + self.expiry.get(role, DELEGATED_EXPIRY)
        md.signatures.clear()
        signers = self.keys.signers(self._key_role(role))
        if not signers:
            raise PermissionError(f"{self.name}: no signing key for role {role!r}")
        for signer in signers:
            md.sign(signer, append=True)
        data = md.to_bytes(JSONSerializer(compact=False))
        atomic_write_bytes(self._path(role, md.signed.version), data)

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        out = {}
        for role in self._all_targets_roles():
            versions = self._versions(role)
            if versions:
                out[f"{role}.json"] = MetaFile(versions[-1])
        return out

    @property
    def snapshot_info(self) -> MetaFile:
        return MetaFile(self._versions(Snapshot.type)[-1])

    def _all_targets_roles(self) -> list[str]:
        roles = [Targets.type]
        if self._versions(Targets.type):
            delegations = self.targets().delegations
            if delegations and delegations.roles:
                roles += list(delegations.roles)
        return roles

    # -- operations ----------------------------------------------------------------------
    def init(self, root_keys: int = 2, root_threshold: int = 2, targets_keys: int = 2, targets_threshold: int = 2) -> None:
        """Create keys and the first version of every top-level role (root and targets offline, threshold-signed)."""
        if self.exists():
            raise FileExistsError(f"{self.folder} already holds a TUF repository ({self.name})")
        counts = {Root.type: (root_keys, root_threshold), Targets.type: (targets_keys, targets_threshold),
                  Snapshot.type: (1, 1), Timestamp.type: (1, 1)}
        with self.edit_root() as root:
            root.consistent_snapshot = True
            for role, (n, threshold) in counts.items():
                for key in self.keys.generate(self._key_role(role), n):
                    root.add_key(key, role)
                root.roles[role].threshold = threshold
        with self.edit_targets():
            pass
        self.do_snapshot(force=True)
        self.do_timestamp(force=True)

    def delegate(self, role: str, paths: list[str], threshold: int = 1, terminating: bool = True) -> None:
        """A delegated, terminating role (e.g. ``perception-orin`` for ``perception/orin/*``) with its own key."""
        keys = self.keys.generate(self._key_role(role), threshold)
        with self.edit_targets() as targets:
            if targets.delegations is None:
                targets.delegations = Delegations(keys={}, roles={})
            if role in (targets.delegations.roles or {}):
                raise ValueError(f"{self.name}: role {role!r} is already delegated")
            targets.delegations.roles[role] = DelegatedRole(role, [k.keyid for k in keys], threshold, terminating, paths)
            for k in keys:
                targets.delegations.keys[k.keyid] = k
        with self.edit(role):
            pass
        self.publish()

    def add_target(self, path: str, data: bytes, role: str = Targets.type, custom: dict | None = None,
                   replaces: tuple[str, ...] = ()) -> TargetFile:
        """Store ``data`` as ``targets/<dir>/<sha256>.<name>`` and list it in ``role``'s metadata.

        ``replaces`` drops other paths in the same signed version, so no version lists both or neither.
        """
        target = TargetFile.from_data(path, data, ["sha256"])
        if custom is not None:
            target.unrecognized_fields["custom"] = dict(custom)
        digest = target.hashes["sha256"]
        parent, _, name = path.rpartition("/")
        dest = self.targets_dir / parent / f"{digest}.{name}" if parent else self.targets_dir / f"{digest}.{name}"
        if not dest.exists():
            atomic_write_bytes(dest, data)
        with self.edit(role) as targets:
            for p in replaces:
                targets.targets.pop(p, None)
            targets.targets[path] = target
        return target

    def remove_target(self, path: str, role: str = Targets.type) -> None:
        with self.edit(role) as targets:
            targets.targets.pop(path, None)

    def publish(self) -> None:
        """New snapshot and timestamp over the current targets metadata."""
        self.do_snapshot()
        self.do_timestamp()

    def rotate_root(self, new_keys: int = 2, threshold: int = 2) -> list[str]:
        """Replace the root keys: the new root is signed by the old keys and the new ones, as TUF requires."""
        role = self._key_role(Root.type)
        old = [k.keyid for k in self.keys.public_keys(role)]
        fresh = self.keys.generate(role, new_keys)  # until retired, close() signs with old and new alike
        with self.edit_root() as root:
            for keyid in old:
                root.revoke_key(keyid, Root.type)
            for k in fresh:
                root.add_key(k, Root.type)
            root.roles[Root.type].threshold = threshold
        self.keys.retire(role, old)
        return [k.keyid for k in fresh]

    def refresh_timestamp(self) -> None:
        """Re-sign the timestamp (it expires daily); the online key does this without touching anything else."""
        self.do_timestamp(force=True)
