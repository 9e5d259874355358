"""Warm start and stop time of the test control plane (etcd + kube-apiserver ready).

Run: .venv/bin/python -m bench.control_plane_start [runs]
Reports p50 and max over the runs; binaries must be built (scripts/build-k8s-tools.sh).
"""

from __future__ import annotations

import statistics
import sys
import time

from tests.support.control_plane import ControlPlane


def main(runs: int) -> None:
    starts, stops = [], []
    for _ in range(runs):
        t0 = time.monotonic()
        plane = ControlPlane().start()
        starts.append(time.monotonic() - t0)
        t1 = time.monotonic()
        plane.stop()
        stops.append(time.monotonic() - t1)
    print(
        f"control plane start: p50 {statistics.median(starts):.2f}s max {max(starts):.2f}s "
        f"(n={runs}); stop: p50 {statistics.median(stops):.2f}s"
    )


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
