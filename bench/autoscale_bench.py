"""Autoscaling on tokens per second: how fast an agent follows a load step and its end, and
what the metrics pipeline costs.

Run: .venv/bin/python -m bench.autoscale_bench [--runs N] [--rate-window 10s]

Each run is the end-to-end test's scenario (``tests/support/autoscaling.py``): a shipped
cluster with the chart, a real Prometheus (1 s scrapes) and KEDA (operator and metrics API
server, through the apiserver's aggregation layer), one agent with ``provider: keda``, target
250 tokens/s per pod, 1 to 4 pods, scale-down stabilization 5 s; the HPA controller syncs
every second. The load step offers 2.6 x the target (650 tokens/s, 3 pods wanted) through the
agent's Service until 3 pods serve; then it stops.

Reported: seconds from the load step to the 2nd replica and to 3 ready pods, and from the
load's end to 1 replica. The baseline, from the same run's settings, is the rate window: a
step shows fully in the rate only after one window, so ``time / window`` says how much the
rest of the pipeline (scrape, KEDA, HPA sync, pod start) adds. Scale-down is compared with
the window plus the stabilization. Prometheus' and KEDA's memory (RSS) and CPU used over
the run are read from /proc.
"""

from __future__ import annotations

import argparse
import statistics

from tests.support.autoscaling import AutoscalingStack, run_scale_scenario


def seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    for unit in ("ms", "s", "m", "h"):
        if duration.endswith(unit) and duration[: -len(unit)].isdigit():
            return int(duration[: -len(unit)]) * units[unit]
    raise ValueError(duration)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--rate-window", default="10s")
    args = parser.parse_args()
    window = seconds(args.rate_window)
    stabilization = 5
    rows: list[dict[str, float]] = []
    with AutoscalingStack(rate_window=args.rate_window) as stack:
        prom_cpu0 = stack.prometheus.cpu_seconds()
        keda_cpu0 = stack.keda.cpu_seconds()
        for i in range(args.runs):
            kubectl = stack.cluster.namespace(f"bench-autoscale-{i}")
            run = run_scale_scenario(
                stack, kubectl, target=250.0, load_factor=2.6, scale_down_window=stabilization
            )
            row = dict(run.timings)
            row["failed"] = len(run.load.failures)
            row["requests"] = len(run.load.answers)
            row["peak"] = max(run.audit.counts)
            rows.append(row)
            stack.cluster.plane.kubectl("delete", "namespace", kubectl.namespace, "--wait=false")
            print(
                f"run {i + 1}: 2nd replica {row['second_replica']:.1f}s, 3 ready "
                f"{row['three_ready']:.1f}s, back to 1 {row['scaled_down']:.1f}s, peak "
                f"{row['peak']:.0f} pods, {row['requests']:.0f} requests, "
                f"{row['failed']:.0f} failed, replica counts {run.audit.counts}"
            )
        prom_cpu = stack.prometheus.cpu_seconds() - prom_cpu0
        keda_cpu = stack.keda.cpu_seconds() - keda_cpu0
        prom_rss = stack.prometheus.rss_bytes()
        keda_rss = stack.keda.rss_bytes()

    def med(key: str) -> float:
        return statistics.median(r[key] for r in rows)

    print(
        f"\nwindows: rate {args.rate_window}, scrape 1s, HPA sync 1s, scale-down stabilization "
        f"{stabilization}s, scale-up stabilization 0s"
    )
    print("| measure | median s | / baseline |")
    print("|---|---|---|")
    print(f"| load step -> 2nd replica | {med('second_replica'):.1f} | "
          f"{med('second_replica') / window:.2f} x rate window |")  # fmt: skip
    print(f"| load step -> 3 pods ready | {med('three_ready'):.1f} | "
          f"{med('three_ready') / window:.2f} x rate window |")  # fmt: skip
    down_ratio = med("scaled_down") / (window + stabilization)
    print(f"| load stop -> 1 replica | {med('scaled_down'):.1f} | "
          f"{down_ratio:.2f} x (window + stabilization) |")  # fmt: skip
    print(
        f"\nPrometheus: {prom_rss / 2**20:.0f} MiB RSS, {prom_cpu:.1f} CPU s over the runs; "
        f"KEDA (operator + metrics server): {keda_rss / 2**20:.0f} MiB RSS, {keda_cpu:.1f} CPU s"
    )


if __name__ == "__main__":
    main()
