#!/usr/bin/env python3
"""Summarise a trace written by `hourglass-bench dispatch --trace PATH` (one file per store size,
PATH.<stored>): where each run's lateness (due -> executor start) went.

    tools/dispatch-trace.py /tmp/t.10000 [--slowest 0.02] [--json]

For each phase (burst, steady) it prints the lateness percentiles; for the store's lease and
result transactions their count, runs per transaction, and the percentiles of each step (wait
for the writer, execute, commit and sync, resume the caller); and for the slowest runs (by
default the slowest 2%) the mean of each step of their own path: due -> lease transaction
queued, its wait, execution, commit, resumption, then resumed -> executor start. A run is
matched to the last lease transaction that resumed before it started (the trace does not name
the transaction). That match is exact when runs are leased once due (`--lease-ahead-us 0`; the
dispatcher has one lease transaction in flight). With the coordinator's lease-ahead a run held
until its due time matches a later transaction than its own, so its steps are not its own:
read the lateness percentiles then, and the steps only with `--lease-ahead-us 0`. Checkpoint
passes and the two probes' late wake-ups (a thread and a task sleeping 1 ms at a time) are
summarised beside them.

Trace lines (all instants wall-clock microseconds):
    burst <first due>                 steady <first due>
    run <due> <started>
    store <kind> <queued> <started> <executed> <committed> <resumed> <count> <wal frames>
    thread <instant> <late us>        task <instant> <late us>
"""

import argparse
import bisect
import json
import sys


def percentile(values, fraction):
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * fraction))]


def spread(values):
    """p50 / p90 / p99 / max of a list of microsecond figures, in microseconds."""
    if not values:
        return {}
    return {
        "p50": percentile(values, 0.5),
        "p90": percentile(values, 0.9),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "mean": round(sum(values) / len(values), 1),
    }


def read(path):
    trace = {"runs": [], "store": [], "probes": {"thread": [], "task": []}, "burst": None, "steady": None}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue
            kind = fields[0]
            try:
                if kind == "run":
                    trace["runs"].append((int(fields[1]), int(fields[2])))
                elif kind == "store":
                    trace["store"].append((fields[1], *map(int, fields[2:9])))
                elif kind in ("thread", "task"):
                    trace["probes"][kind].append((int(fields[1]), int(fields[2])))
                elif kind in ("burst", "steady"):
                    trace[kind] = int(fields[1])
                else:
                    raise ValueError(f"unknown line kind {kind!r}")
            except (IndexError, ValueError) as error:
                sys.exit(f"{path}:{number}: {error}")
    return trace


STEPS = ["due_to_queued", "writer_wait", "execute", "commit", "resume", "resumed_to_start"]


def summarise(trace, slowest):
    leases = sorted((t for t in trace["store"] if t[0] == "lease"), key=lambda t: t[5])
    resumed = [t[5] for t in leases]
    summary = {"phases": {}, "transactions": {}, "checkpoints": {}, "probes": {}}

    steady_from = trace["steady"] if trace["steady"] is not None else -1
    phases = {"burst": [], "steady": []}
    for due, started in trace["runs"]:
        phases["steady" if due >= steady_from else "burst"].append((due, started))

    for name, runs in phases.items():
        if not runs:
            continue
        lateness = [started - due for due, started in runs]
        paths = []
        for due, started in runs:
            index = bisect.bisect_right(resumed, started) - 1
            if index < 0:
                continue
            _, queued, began, executed, committed, back, _, _ = leases[index]
            paths.append((started - due, [queued - due, began - queued, executed - began, committed - executed, back - committed, started - back]))
        paths.sort(key=lambda p: p[0])
        cut = paths[int(len(paths) * (1 - slowest)) :] if paths else []
        summary["phases"][name] = {
            "runs": len(runs),
            "lateness_us": spread(lateness),
            "slowest": {
                "fraction": slowest,
                "runs": len(cut),
                "mean_us": {step: round(sum(p[1][i] for p in cut) / len(cut), 1) for i, step in enumerate(STEPS)} if cut else {},
            },
            "all_median_us": {step: percentile([p[1][i] for p in paths], 0.5) for i, step in enumerate(STEPS)} if paths else {},
        }

    for kind in sorted({t[0] for t in trace["store"]} - {"checkpoint", "finish"}):
        rows = [t for t in trace["store"] if t[0] == kind]
        summary["transactions"][kind] = {
            "count": len(rows),
            "items_per_transaction": spread([t[6] for t in rows]),
            "writer_wait_us": spread([t[2] - t[1] for t in rows]),
            "execute_us": spread([t[3] - t[2] for t in rows]),
            "commit_us": spread([t[4] - t[3] for t in rows]),
            "resume_us": spread([t[5] - t[4] for t in rows]),
        }
    passes = [t for t in trace["store"] if t[0] in ("checkpoint", "finish")]
    summary["checkpoints"] = {"passes": len(passes), "duration_us": spread([t[3] - t[2] for t in passes])}
    for probe, wakes in trace["probes"].items():
        summary["probes"][probe] = {"late_wakeups": len(wakes), "late_us": spread([late for _, late in wakes])}
    return summary


def milliseconds(value):
    return "-" if value is None else f"{value / 1000:.2f}"


def show(path, summary):
    print(f"== {path}")
    for name, phase in summary["phases"].items():
        lateness = phase["lateness_us"]
        print(
            f"{name}: {phase['runs']} runs, lateness p50 {milliseconds(lateness['p50'])} / p90 {milliseconds(lateness['p90'])}"
            f" / p99 {milliseconds(lateness['p99'])} / max {milliseconds(lateness['max'])} ms"
        )
        cut = phase["slowest"]
        if cut["runs"]:
            print(f"  where the slowest {cut['fraction']:.0%} ({cut['runs']} runs) spent their time, mean ms (median of all runs):")
            for step in STEPS:
                print(f"    {step:<17} {milliseconds(cut['mean_us'][step]):>8} ({milliseconds(phase['all_median_us'][step])})")
    for kind, row in summary["transactions"].items():
        print(
            f"{kind} transactions: {row['count']}, items p50 {row['items_per_transaction']['p50']} (mean {row['items_per_transaction']['mean']});"
            f" ms p50/p99: wait {milliseconds(row['writer_wait_us']['p50'])}/{milliseconds(row['writer_wait_us']['p99'])},"
            f" execute {milliseconds(row['execute_us']['p50'])}/{milliseconds(row['execute_us']['p99'])},"
            f" commit {milliseconds(row['commit_us']['p50'])}/{milliseconds(row['commit_us']['p99'])},"
            f" resume {milliseconds(row['resume_us']['p50'])}/{milliseconds(row['resume_us']['p99'])}"
        )
    checkpoints = summary["checkpoints"]
    if checkpoints["passes"]:
        print(f"checkpoint passes: {checkpoints['passes']}, duration p50 {milliseconds(checkpoints['duration_us']['p50'])} / max {milliseconds(checkpoints['duration_us']['max'])} ms")
    for probe, row in summary["probes"].items():
        if row["late_wakeups"]:
            print(f"{probe} probe: {row['late_wakeups']} late wake-ups, p50 {milliseconds(row['late_us']['p50'])} / max {milliseconds(row['late_us']['max'])} ms")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traces", nargs="+", help="trace files (PATH.<stored> as the benchmark wrote them)")
    parser.add_argument("--slowest", type=float, default=0.02, help="fraction of runs to break down (default 0.02)")
    parser.add_argument("--json", action="store_true", help="print JSON")
    arguments = parser.parse_args()
    if not 0 < arguments.slowest <= 1:
        parser.error("--slowest must be in (0, 1]")
    results = {path: summarise(read(path), arguments.slowest) for path in arguments.traces}
    if arguments.json:
        json.dump(results, sys.stdout, indent=2, sort_keys=True)
        print()
    else:
        for path, summary in results.items():
            show(path, summary)


if __name__ == "__main__":
    main()
