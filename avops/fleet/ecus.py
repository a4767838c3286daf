"""Simulated vehicles' ECUs (the ADAS domain controller, the gateway): verify and install over Uptane, boot, run the model, report signed.

Each vehicle has its own ed25519 key (registered with the platform, as a manufacturer would at
end of line) and an Uptane primary state. After installing, it "boots": it hashes the image it
will run from flash, loads it into ONNX Runtime and times one inference on a camera-sized frame.
Faults can be planted per vehicle: ``boot_fail`` (the new image does not come up),
``corrupt_flash`` (the flashed bytes differ from what was verified) and ``slow`` (the model runs
far over its latency budget).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime

import numpy as np
from securesystemslib.signer import CryptoSigner, Key, Signer

from avops.home import HomeLayout
from avops.rollout.reports import VersionReport, sign_report
from avops.rollout.vehicle_keys import register, vehicle_keys_path
from avops.store import sha256_bytes
from avops.vehicle.verifier import Ecu, Primary, Rejected, Sources

FAULTS = ("boot_fail", "corrupt_flash", "slow")


class SimulatedVehicle:
    def __init__(self, home: HomeLayout, cohort: str, vehicle_id: str, hardware_id: str, ecu: str = "adas_domain") -> None:
        self.home, self.cohort, self.vehicle_id = home, cohort, vehicle_id
        self.dir = home.root / "fleet_ecus" / cohort / vehicle_id
        # one Uptane client per ECU; the vehicle's report key is shared (the primary signs for the vehicle)
        self.primary = Primary(self.dir / ("ecu" if ecu == "adas_domain" else f"ecu-{ecu}"), Ecu(ecu, hardware_id, vehicle_id))
        self._signer = self._key()
        ota = home.root / "ota"
        if not (self.primary.dir / "image" / "metadata" / "root.json").exists():
            self.primary.init((ota / "image/metadata/1.root.json").read_bytes(), (ota / f"director/{cohort}/metadata/1.root.json").read_bytes())

    def _key(self) -> Signer:
        path = self.dir / "key.pem"
        if not path.exists():
            self.dir.mkdir(parents=True, exist_ok=True)
            signer = CryptoSigner.generate_ed25519()
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(signer.private_bytes)
            register(self.home, self.vehicle_id, signer.public_key)
            return signer
        entry = json.loads(vehicle_keys_path(self.home).read_text())[self.vehicle_id]
        return Signer.from_priv_key_uri(f"file2:{path}", Key.from_dict(entry["keyid"], dict(entry["key"])))

    def sources(self) -> Sources:
        ota = self.home.root / "ota"
        d = ota / "director" / self.cohort
        return Sources((ota / "image/metadata").as_uri() + "/", (ota / "image/targets").as_uri() + "/",
                       (d / "metadata").as_uri() + "/", (d / "targets").as_uri() + "/", offline=True)

    def cycle(self, rollout_id: str, component: str, trusted_time: datetime, fault: str | None = None) -> dict:
        """One update cycle: verify + install what is assigned, boot, measure, and return a signed version report."""
        if fault is not None and fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; use one of {FAULTS}")
        note = ""
        try:
            self.primary.update(self.sources(), trusted_time)
        except Rejected as exc:
            note = f"update rejected: {exc}"
        inst = self.primary.installed().get(component)
        booted, sha, health = False, None, {}
        if inst is not None:
            image = self.primary.dir / "images" / component / f"{inst.sha256}.bin"
            data = image.read_bytes()
            if fault == "corrupt_flash":
                data = data[:-1] + bytes([data[-1] ^ 0xFF])
            sha = sha256_bytes(data)  # what is on flash, hashed after boot
            booted = fault != "boot_fail"
            if booted:
                health = self._health(data, slow=fault == "slow")
        report = VersionReport(self.vehicle_id, self.primary.ecu.ecu_identifier, rollout_id, sha,
                               inst.release_counter if inst else None, booted, {**health, **({"note": note} if note else {})},
                               trusted_time.isoformat())
        return sign_report(report, self._signer)

    @staticmethod
    def _health(engine: bytes, slow: bool) -> dict:
        try:
            from avops.compile.backends import session

            sess = session(engine)
            inp = sess.get_inputs()[0]  # a camera frame for perception, a feature row for maintenance
            x = np.random.default_rng(0).uniform(0, 255, [d if isinstance(d, int) else 1 for d in inp.shape]).astype(np.float32)
            sess.run(None, {inp.name: x})
            t0 = time.perf_counter()
            sess.run(None, {inp.name: x})
            ms = (time.perf_counter() - t0) * 1000
        except Exception as exc:  # noqa: BLE001 - an image that does not load is a failed boot in practice
            return {"inference_ms": float("inf"), "error": str(exc)[:200]}
        return {"inference_ms": round(ms + (200.0 if slow else 0.0), 3)}
