"""Code and library versions a checkpoint records, so a result can be traced to source and rebuilt."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from avops.fleet_registry import project_root

LIBRARIES = ("avops", "torch", "numpy", "pandas", "pyarrow", "onnx", "onnxruntime", "dagster")


def git_revision(root: Path | None = None) -> dict:
    """HEAD commit and whether the work tree had uncommitted changes (``unknown`` outside a checkout)."""
    root = root or project_root()
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                    text=True, timeout=10, check=True).stdout.strip())
        return {"git_sha": sha, "git_dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"git_sha": "unknown", "git_dirty": None}


def library_versions(names: tuple[str, ...] = LIBRARIES) -> dict[str, str]:
    out = {"python": platform.python_version()}
    for n in names:
        try:
            out[n] = metadata.version(n)
        except metadata.PackageNotFoundError:
            out[n] = "not installed"
    return out
