"""Benchmark: signing/publishing OTA packages, and a vehicle's full Uptane verification vs one plain TUF refresh.

Builds the image repository and a director per cohort for N cohorts x M components (random
engine-sized targets), timing the publishing. Then, over HTTP on 127.0.0.1 and alternating in
rounds, from a fresh state each time:

* avops' full verification (``avops.vehicle.verifier.Primary.update``): director and image
  metadata through the TUF client, the match step, counters, trusted-time expiry, and the
  download of the ECU's M targets;
* one plain python-tuf ``Updater.refresh()`` of the image repository.

Prints one summary line last, e.g.

    ota 4 cohorts x 3 components: publish 2.10 s, full verification 61.2 ms, plain refresh 24.8 ms, plain refresh 2.47x

The last figure is full verification time over one plain refresh (target: <= 2.0x).
Run: ``.venv/bin/python benchmarks/bench_ota.py [--cohorts N] [--components M] [--rounds R]``.
"""

from __future__ import annotations

import argparse
import functools
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from tuf.ngclient import Updater

from avops.home import HomeLayout
from avops.ota.uptane import Uptane
from avops.vehicle.verifier import Ecu, Primary, Sources

HW = "NV-ORIN-X-64"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cohorts", type=int, default=4)
    ap.add_argument("--components", type=int, default=3)
    ap.add_argument("--size-kib", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=15)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="avops-bench-ota-"))
    try:
        home = HomeLayout(tmp / "home")
        ota = Uptane(home)
        cohorts = [f"cohort-{i}" for i in range(args.cohorts)]
        components = [f"component{j}" for j in range(args.components)]
        t0 = time.perf_counter()
        for c in cohorts:
            for comp in components:
                ota.release(c, comp, "orin", f"engine-{c}.onnx", os.urandom(args.size_kib * 1024), "adas_domain", HW, f"rollout-{c}")
        publish = time.perf_counter() - t0

        root = home.root / "ota"
        handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
        handler.log_message = lambda *a, **k: None
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_address[1]}"
        image_root = (root / "image/metadata/1.root.json").read_bytes()
        director_root = (root / f"director/{cohorts[0]}/metadata/1.root.json").read_bytes()
        sources = Sources.online(f"{url}/image", f"{url}/director/{cohorts[0]}")

        def full() -> float:
            state = tmp / "ecu"
            shutil.rmtree(state, ignore_errors=True)
            ecu = Primary(state, Ecu("adas_domain", HW))
            ecu.init(image_root, director_root)
            t = time.perf_counter()
            report = ecu.update(sources, datetime.now(timezone.utc))
            dt = time.perf_counter() - t
            if len(report.installed) != args.components:
                raise SystemExit(f"expected {args.components} installs, got {len(report.installed)}")
            return dt

        def plain() -> float:
            d = tmp / "plain"
            shutil.rmtree(d, ignore_errors=True)
            d.mkdir()
            up = Updater(str(d), f"{url}/image/metadata/", None, None, bootstrap=image_root)
            t = time.perf_counter()
            up.refresh()
            return time.perf_counter() - t

        full(), plain()  # warm up
        a, b = [], []
        for _ in range(args.rounds):
            a.append(full())
            b.append(plain())
        server.shutdown()
        fa, pb = statistics.median(a) * 1000, statistics.median(b) * 1000
        n_targets = args.cohorts * args.components
        print(f"published {n_targets} targets ({args.size_kib} KiB each) into 1 image repository and {args.cohorts} directors")
        print(f"full verification = director + image metadata, match, counters, trusted-time expiry, {args.components} downloads")
        print(f"ota {args.cohorts} cohorts x {args.components} components: publish {publish:.2f} s, full verification {fa:.1f} ms, "
              f"plain refresh {pb:.1f} ms, plain refresh {fa / pb:.2f}x")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
