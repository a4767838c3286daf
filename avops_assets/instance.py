"""The local Dagster instance: DAGSTER_HOME inside AVOPS_HOME, configured from dagster.yaml."""

import os
import shutil
from pathlib import Path

from avops.home import avops_home

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def ensure_dagster_home() -> Path:
    """Point DAGSTER_HOME at ``$AVOPS_HOME/dagster`` unless set, and install the project's dagster.yaml there."""
    home = Path(os.environ.get("DAGSTER_HOME") or avops_home() / "dagster").resolve()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    src = PROJECT_ROOT / "dagster.yaml"
    dst = home / "dagster.yaml"
    if src.exists() and (not dst.exists() or dst.read_bytes() != src.read_bytes()):
        shutil.copyfile(src, dst)
    nux = home / ".nux" / "nux.yaml"  # skip the "join the community" pop-up in the UI
    if not nux.exists():
        nux.parent.mkdir(parents=True, exist_ok=True)
        nux.write_text("seen: 1\n")
    return home
