#!/usr/bin/env python3
"""Where the time of a replayed CUDA graph goes, from a kernel_trace CSV.

For each graph in the trace (or the one given with --graph), the last complete replay is cut
out (a replay is one record per kernel node, in start order) and every kernel is charged the
time from the latest end of the kernels before it to its own end: kernels launched with
programmatic dependent launch overlap, so their durations add up to more than the replay's
wall time, while these charges add up to exactly that wall time. "idle" is the part of a
kernel's charge before it started (nothing of the graph ran: launch latency, dependency
resolution). Prints a table per graph, largest charge first. With --sequence FIRST:LAST it
prints instead the replay's kernels FIRST..LAST-1 in start order (start offset, duration,
charge): the chain of one layer, to see which kernel's end the next one waited for.
Usage: graph_breakdown.py TRACE.csv[.gz] [--graph ID] [--top N] [--sequence FIRST:LAST]
"""
import argparse
import csv
import gzip
import re
from collections import defaultdict


def short_name(name):
    """bf::cuda::(anonymous namespace)::gemv_kernel<1, 4, false, false>(...) -> gemv_kernel<1, 4, false, false>"""
    s = name.replace("(anonymous namespace)::", "")
    if s.startswith("void "):
        s = s[5:]
    s = s.split("(")[0]
    head = s.split("<")[0]
    return s[head.rfind("::") + 2:] if "::" in head else s


def load(path):
    by_graph = defaultdict(list)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        for r in csv.DictReader(f):
            if int(r["graph"]) == 0:
                continue  # not launched from a graph
            by_graph[int(r["graph"])].append((int(r["start_ns"]), int(r["end_ns"]),
                                               int(r["graph_node"]), short_name(r["name"]),
                                               f'({r["grid_x"]},{r["grid_y"]},{r["grid_z"]})'))
    return by_graph


def last_replay(records):
    records.sort()
    nodes = len({r[2] for r in records})
    replays = len(records) // nodes
    if replays == 0:
        return [], 0
    return records[(replays - 1) * nodes:replays * nodes], replays


def report(graph, records, top):
    replay, replays = last_replay(records)
    if not replay:
        return
    charged = defaultdict(lambda: [0, 0.0, 0.0, 0.0])
    latest_end = replay[0][0]
    for start, end, _, name, grid in replay:
        row = charged[(name, grid)]
        row[0] += 1
        row[1] += max(0, end - latest_end) / 1e3
        row[2] += max(0, start - latest_end) / 1e3
        row[3] += (end - start) / 1e3
        latest_end = max(latest_end, end)
    wall = (latest_end - replay[0][0]) / 1e3
    idle = sum(v[2] for v in charged.values())
    print(f"\n### graph {graph}: {len(replay)} kernels, replay {replays} of {replays}: "
          f"{wall:.1f} us wall, {idle:.1f} us with no kernel of it running")
    print("| kernel | grid | launches | charged us | share | of which idle us | sum of durations us |")
    print("|---|---|---|---|---|---|---|")
    rows = sorted(charged.items(), key=lambda kv: -kv[1][1])
    for (name, grid), (n, c, i, d) in rows[:top]:
        print(f"| {name} | {grid} | {n} | {c:.1f} | {100 * c / wall:.1f}% | {i:.1f} | {d:.1f} |")


def sequence(graph, records, first, last):
    replay, _ = last_replay(records)
    if not replay:
        return
    t0 = latest_end = replay[0][0]
    print(f"\n### graph {graph}: kernels {first}..{last - 1} of the last replay")
    print("| # | kernel | grid | start us | duration us | charged us |")
    print("|---|---|---|---|---|---|")
    for i, (start, end, _, name, grid) in enumerate(replay):
        if first <= i < last:
            print(f"| {i} | {name} | {grid} | {(start - t0) / 1e3:.2f} | {(end - start) / 1e3:.2f} "
                  f"| {max(0, end - latest_end) / 1e3:.2f} |")
        latest_end = max(latest_end, end)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--graph", type=int)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--sequence", help="FIRST:LAST kernel indices of the last replay")
    args = ap.parse_args()
    by_graph = load(args.trace)
    for graph in sorted(by_graph):
        if args.graph is not None and graph != args.graph:
            continue
        if args.sequence:
            first, last = (int(v) for v in args.sequence.split(":"))
            sequence(graph, by_graph[graph], first, last)
        else:
            report(graph, by_graph[graph], args.top)


if __name__ == "__main__":
    main()
