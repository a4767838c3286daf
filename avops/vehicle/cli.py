"""``avops-vehicle``: the vehicle-side client.

The TUF conformance client protocol (exit 0 on success, 1 on any failure)::

    avops-vehicle --metadata-dir DIR init TRUSTED_ROOT
    avops-vehicle --metadata-dir DIR --metadata-url URL refresh
    avops-vehicle --metadata-dir DIR --metadata-url URL --target-name PATH [--target-name PATH ...] \\
                  --target-base-url URL --target-dir DIR download

and the Uptane primary::

    avops-vehicle uptane --state-dir DIR --ecu-id ID --hardware-id HW init IMAGE_ROOT DIRECTOR_ROOT
    avops-vehicle uptane --state-dir DIR --ecu-id ID --hardware-id HW update (--image-url U --director-url U | --bundle DIR)
                  [--trusted-time ISO-8601]
"""

from __future__ import annotations

import shutil
import sys
from datetime import datetime, timezone
from pathlib import Path

import click
from tuf.ngclient import Updater


def _fail(message: str) -> None:
    click.echo(f"avops-vehicle: {message}", err=True)
    sys.exit(1)


@click.group(invoke_without_command=False)
@click.option("--metadata-dir", type=click.Path(file_okay=False), help="Trusted metadata (non-versioned names: root.json, ...).")
@click.option("--metadata-url", help="Base URL of the repository's metadata.")
@click.option("--target-name", "target_names", multiple=True, help="Target path to download (repeatable).")
@click.option("--target-base-url", help="Base URL of the repository's targets.")
@click.option("--target-dir", type=click.Path(file_okay=False), help="Where downloaded targets go.")
@click.pass_context
def main(ctx, metadata_dir, metadata_url, target_names, target_base_url, target_dir) -> None:
    """Vehicle-side TUF/Uptane client."""
    ctx.obj = {"metadata_dir": metadata_dir, "metadata_url": metadata_url, "target_names": target_names,
               "target_base_url": target_base_url, "target_dir": target_dir}


def _need(ctx, *names: str) -> dict:
    missing = [n for n in names if not ctx.obj.get(n)]
    if missing:
        _fail(f"missing option(s): {', '.join('--' + m.replace('_', '-') for m in missing)}")
    return ctx.obj


@main.command()
@click.argument("trusted_root", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def init(ctx, trusted_root) -> None:
    """Trust TRUSTED_ROOT (copied to METADATA_DIR/root.json)."""
    o = _need(ctx, "metadata_dir")
    try:
        from tuf.api.metadata import Metadata

        data = Path(trusted_root).read_bytes()
        Metadata.from_bytes(data)
        Path(o["metadata_dir"]).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(trusted_root, Path(o["metadata_dir"]) / "root.json")
    except Exception as exc:  # noqa: BLE001 - the protocol wants exit 1 on any failure
        _fail(f"init failed: {exc}")


def _updater(o: dict, with_targets: bool = False) -> Updater:
    return Updater(o["metadata_dir"], o["metadata_url"], o.get("target_dir") if with_targets else None,
                   o.get("target_base_url") if with_targets else None, bootstrap=None)


@main.command()
@click.pass_context
def refresh(ctx) -> None:
    """Update top-level metadata from METADATA_URL."""
    o = _need(ctx, "metadata_dir", "metadata_url")
    try:
        _updater(o).refresh()
    except Exception as exc:  # noqa: BLE001
        _fail(f"refresh failed: {exc}")


@main.command()
@click.pass_context
def download(ctx) -> None:
    """Refresh, then download each --target-name (skipping ones already present with matching hashes)."""
    o = _need(ctx, "metadata_dir", "metadata_url", "target_names", "target_base_url", "target_dir")
    try:
        Path(o["target_dir"]).mkdir(parents=True, exist_ok=True)
        up = _updater(o, with_targets=True)
        up.refresh()
        for name in o["target_names"]:
            info = up.get_targetinfo(name)
            if info is None:
                _fail(f"target {name!r} not found in the repository's metadata")
            if up.find_cached_target(info) is None:
                up.download_target(info)
    except SystemExit:
        raise
    except Exception as exc:  # noqa: BLE001
        _fail(f"download failed: {exc}")


@main.group()
@click.option("--state-dir", type=click.Path(file_okay=False), required=True, help="The ECU's verifier state.")
@click.option("--ecu-id", required=True, help="This ECU's identifier (as the director knows it).")
@click.option("--hardware-id", required=True, help="This ECU's hardware id.")
@click.pass_context
def uptane(ctx, state_dir, ecu_id, hardware_id) -> None:
    """Uptane primary: director + image repository, full verification."""
    from avops.vehicle.verifier import Ecu, Primary

    ctx.obj["primary"] = Primary(Path(state_dir), Ecu(ecu_id, hardware_id))


@uptane.command("init")
@click.argument("image_root", type=click.Path(exists=True, dir_okay=False))
@click.argument("director_root", type=click.Path(exists=True, dir_okay=False))
@click.pass_context
def uptane_init(ctx, image_root, director_root) -> None:
    """Provision the trusted image and director roots."""
    ctx.obj["primary"].init(Path(image_root).read_bytes(), Path(director_root).read_bytes())


@uptane.command("update")
@click.option("--image-url")
@click.option("--director-url")
@click.option("--bundle", type=click.Path(exists=True, file_okay=False), help="Offline bundle instead of URLs.")
@click.option("--trusted-time", help="ISO-8601 time from a trusted source (default: now, UTC).")
@click.pass_context
def uptane_update(ctx, image_url, director_url, bundle, trusted_time) -> None:
    """Verify everything, then install what the director assigns to this ECU."""
    from avops.vehicle.verifier import Rejected, Sources

    if bundle:
        sources = Sources.bundle(Path(bundle))
    elif image_url and director_url:
        sources = Sources.online(image_url, director_url)
    else:
        _fail("give --image-url and --director-url, or --bundle")
    when = datetime.fromisoformat(trusted_time) if trusted_time else datetime.now(timezone.utc)
    try:
        report = ctx.obj["primary"].update(sources, when)
    except Rejected as exc:
        _fail(f"rejected: {exc}")
    for i in report.installed:
        click.echo(f"installed {i.path} sha256:{i.sha256[:12]} release {i.release_counter} ({i.rollout_id})")
    for p in report.already_current:
        click.echo(f"current {p}")


if __name__ == "__main__":
    main()
