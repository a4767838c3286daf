"""Fetchers for python-tuf's client: a local folder (offline bundle) behaves like an HTTP server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlparse

from tuf.api.exceptions import DownloadHTTPError
from tuf.ngclient import FetcherInterface

CHUNK = 1 << 16


class FileFetcher(FetcherInterface):
    """Serves ``file://`` URLs from disk; a missing file is a 404, as the TUF client expects."""

    def _fetch(self, url: str) -> Iterator[bytes]:
        parsed = urlparse(url)
        if parsed.scheme != "file":
            raise DownloadHTTPError(f"offline bundle: only file:// URLs, got {url}", 400)
        path = Path(unquote(parsed.path))
        if not path.is_file():
            raise DownloadHTTPError(f"not in the bundle: {path}", 404)
        with open(path, "rb") as f:
            while chunk := f.read(CHUNK):
                yield chunk


def bundle_urls(bundle: Path) -> dict[str, str]:
    """Metadata and target base URLs of an offline bundle (``image/`` and ``director/`` side by side)."""
    b = Path(bundle).resolve()
    for part in ("image/metadata", "director/metadata"):
        if not (b / part).is_dir():
            raise FileNotFoundError(f"{b} is not an OTA bundle: {part}/ is missing (make one with `avops ota bundle`)")
    return {"image_metadata": (b / "image/metadata").as_uri() + "/", "image_targets": (b / "image/targets").as_uri() + "/",
            "director_metadata": (b / "director/metadata").as_uri() + "/", "director_targets": (b / "director/targets").as_uri() + "/"}
