"""A real S3-compatible server for the tests: moto's standalone server on 127.0.0.1, behind a door.

The door is a plain TCP forwarder the tests can close (connections refused, open ones cut) and
open again on the same port: an outage of the endpoint without losing the server's data (moto
keeps it in memory, so stopping the process would also empty the bucket).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Door:
    """Forward 127.0.0.1:port -> 127.0.0.1:target while open."""

    def __init__(self, target: int) -> None:
        self.target, self.port = target, free_port()
        self._listener: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self.open()

    def open(self) -> None:
        with self._lock:
            if self._listener is not None:
                return
            s = socket.socket()
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", self.port))
            s.listen(64)
            self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def close(self) -> None:
        with self._lock:
            s, self._listener = self._listener, None
            conns, self._conns = self._conns, []
        if s is not None:
            s.close()
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@dataclass
class S3Server:
    process: subprocess.Popen
    door: Door
    bucket: str
    client: object = field(repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.door.port}"

    def url(self, prefix: str) -> str:
        return f"s3://{self.bucket}/{prefix}"

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except Exception:  # noqa: BLE001 - a 404 or anything else: not there
            return False


def start(log: Path) -> S3Server:
    """``moto_server`` from PyPI on a free port (fails loudly if it cannot be started)."""
    exe = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if exe is None:
        raise RuntimeError("moto_server not found: install moto[server] (requirements.lock has it; make test installs it)")
    port = free_port()
    out = open(log, "wb")  # noqa: SIM115 - the server writes here for its whole life
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            break
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"moto_server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            time.sleep(0.2)
    else:
        proc.kill()
        raise RuntimeError(f"moto_server did not listen on 127.0.0.1:{port} within 30 s: {log.read_text()[-2000:]}")
    door = Door(port)
    import boto3

    for k, v in {"AWS_ACCESS_KEY_ID": "avops-test", "AWS_SECRET_ACCESS_KEY": "avops-test-secret", "AWS_REGION": "us-east-1",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": f"http://127.0.0.1:{door.port}"}.items():
        os.environ[k] = v
    client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{door.port}")
    client.create_bucket(Bucket="avops-test")
    return S3Server(proc, door, "avops-test", client)
