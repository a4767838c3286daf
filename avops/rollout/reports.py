"""ECU version reports: what a vehicle says it runs after boot, signed with the vehicle's own key.

A report is a DSSE envelope over JSON: vehicle, ECU, rollout, the sha256 of the image the ECU
*booted* (hashed from disk after boot, not what the installer was told), whether it booted, and
health metrics. The platform verifies it with the vehicle's registered public key; an unsigned,
forged or mismatched report counts as a failure, never as a success.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from securesystemslib.dsse import Envelope
from securesystemslib.signer import Key, Signer

PAYLOAD_TYPE = "application/vnd.avops.ecu-version-report+json"


@dataclass
class VersionReport:
    vehicle_id: str
    ecu_identifier: str
    rollout_id: str
    installed_sha256: str | None
    release_counter: int | None
    booted: bool
    health: dict
    at: str


def sign_report(report: VersionReport, signer: Signer) -> dict:
    env = Envelope(json.dumps(asdict(report), sort_keys=True).encode(), PAYLOAD_TYPE, {})
    env.sign(signer)
    return env.to_dict()


def verify_report(envelope: dict, vehicle_keys: dict[str, Key]) -> tuple[VersionReport | None, str | None]:
    """(report, None) when the envelope is signed by the key registered for the vehicle it names; else (None, why)."""
    try:
        env = Envelope.from_dict(json.loads(json.dumps(envelope)))
        report = VersionReport(**json.loads(env.payload))
    except Exception as exc:  # noqa: BLE001 - any malformed report is just that
        return None, f"malformed report: {exc}"
    if env.payload_type != PAYLOAD_TYPE:
        return None, f"not an ECU version report ({env.payload_type})"
    key = vehicle_keys.get(report.vehicle_id)
    if key is None:
        return None, f"vehicle {report.vehicle_id!r} has no registered key"
    try:
        env.verify([key], 1)
    except Exception as exc:  # noqa: BLE001
        return None, f"signature of {report.vehicle_id!r} does not verify: {exc}"
    return report, None
