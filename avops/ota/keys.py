"""Signing keys by role, addressed by securesystemslib signer URIs.

Local keys are PKCS#8 PEM files written with mode 0600 under ``AVOPS_HOME/ota/keys`` and
loaded through the ``file2:`` URI scheme; in production a role's key is any other URI the
signer registry knows (``awskms:``, ``gcpkms:``, ``azurekms:``, ``hsm:``...), registered with
:meth:`KeyRing.add_external`, so no private key ever touches the pipeline host.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from securesystemslib.signer import CryptoSigner, Key, Signer

from avops.store import atomic_write_json


class KeyError_(LookupError):
    pass


class KeyRing:
    """``<root>/keys.json`` maps a role (e.g. ``image/root``) to its keys: signer URI and public key."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.index_path = self.root / "keys.json"

    def _index(self) -> dict:
        return json.loads(self.index_path.read_text()) if self.index_path.exists() else {}

    def _save(self, index: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)
        atomic_write_json(self.index_path, index)

    def generate(self, role: str, count: int = 1) -> list[Key]:
        """New ed25519 keys for ``role``, private halves in 0600 files (created exclusively, never overwritten)."""
        index = self._index()
        folder = self.root / role
        folder.mkdir(parents=True, exist_ok=True)
        os.chmod(folder, 0o700)
        out = []
        for _ in range(count):
            signer = CryptoSigner.generate_ed25519()
            key = signer.public_key
            path = folder / f"{key.keyid}.pem"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(signer.private_bytes)
            index.setdefault(role, []).append({"uri": f"file2:{path}", "public_key": key.to_dict(), "keyid": key.keyid})
            out.append(key)
        self._save(index)
        return out

    def add_external(self, role: str, uri: str, public_key: Key) -> None:
        """Use a KMS/HSM (any securesystemslib signer URI) for ``role``."""
        index = self._index()
        index.setdefault(role, []).append({"uri": uri, "public_key": public_key.to_dict(), "keyid": public_key.keyid})
        self._save(index)

    def retire(self, role: str, keyids: list[str]) -> None:
        """Move keys out of ``role`` (e.g. after a root rotation); they stay on file under ``<role>@retired``."""
        index = self._index()
        keep = [k for k in index.get(role, []) if k["keyid"] not in keyids]
        gone = [k for k in index.get(role, []) if k["keyid"] in keyids]
        index[role] = keep
        index.setdefault(f"{role}@retired", []).extend(gone)
        self._save(index)

    def public_keys(self, role: str) -> list[Key]:
        entries = self._index().get(role)
        if not entries:
            raise KeyError_(f"no keys for role {role!r} in {self.index_path}: initialise the repository first (avops ota init)")
        return [Key.from_dict(e["keyid"], dict(e["public_key"])) for e in entries]

    def signers(self, role: str, keyids: list[str] | None = None) -> list[Signer]:
        entries = self._index().get(role, []) + self._index().get(f"{role}@retired", [])
        out = []
        for e in entries:
            if keyids is not None and e["keyid"] not in keyids:
                continue
            if keyids is None and e in self._index().get(f"{role}@retired", []):
                continue
            if e["uri"].startswith("file2:"):
                path = Path(e["uri"][len("file2:"):])
                mode = path.stat().st_mode & 0o777
                if mode & 0o077:
                    raise PermissionError(f"{path} is readable by others (mode {mode:o}); run chmod 600 on it")
            out.append(Signer.from_priv_key_uri(e["uri"], Key.from_dict(e["keyid"], dict(e["public_key"]))))
        return out
