#!/usr/bin/env python3
"""Where the time of eager forward passes goes, from a kernel_trace CSV.

graph_breakdown.py reads replayed graphs; the DFlash verify and draft passes run eagerly
(the engine records no graphs with a drafter). This takes the kernels launched outside
graphs after the trace's last graph kernel, cuts them into passes after each launch of a
marker kernel (default: argmax_rows_kernel, the last kernel of a forward pass whose logits
leave as argmax ids; the embedding kernel also gathers rows inside a pass), keeps passes
FIRST..LAST-1 (--passes; `blockflash bench spec` runs the verify first: its warm-up passes,
then the timed ones), and charges every kernel the time from the latest end of the kernels
before it to its own end, so the charges of a pass add up to its wall time; "idle" is the
part of a charge before the kernel started (the GPU waited for the host's launch). Prints
per kernel name the mean per pass: launches, charged us, idle us, summed duration us.
Usage: eager_breakdown.py TRACE.csv[.gz] [--passes FIRST:LAST] [--end-marker NAME] [--top N]
"""
import argparse
import csv
import gzip
from collections import defaultdict

from graph_breakdown import short_name


def read_rows(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", newline="") as f:
        rows = []
        for r in csv.DictReader(f):
            rows.append((int(r["start_ns"]), int(r["end_ns"]), int(r["graph"]), short_name(r["name"])))
    rows.sort()
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("trace")
    ap.add_argument("--passes", default="2:10")
    ap.add_argument("--end-marker", default="argmax_rows_kernel")
    ap.add_argument("--top", type=int, default=30)
    args = ap.parse_args()
    rows = read_rows(args.trace)
    last_graph_end = max((e for s, e, g, n in rows if g != 0), default=0)
    eager = [r for r in rows if r[2] == 0 and r[0] >= last_graph_end]
    passes, cur = [], []
    for r in eager:
        cur.append(r)
        if r[3].startswith(args.end_marker):
            passes.append(cur)
            cur = []
    first, last = (int(v) for v in args.passes.split(":"))
    chosen = passes[first:last]
    if not chosen:
        raise SystemExit(f"only {len(passes)} passes after the last graph kernel")
    stats = defaultdict(lambda: [0, 0.0, 0.0, 0.0])  # launches, charged, idle, duration (ns)
    walls = []
    for p in chosen:
        latest = p[0][0]
        for s, e, _, name in p:
            st = stats[name]
            st[0] += 1
            st[1] += max(0, e - latest)
            st[2] += max(0, s - latest)
            st[3] += e - s
            latest = max(latest, e)
        walls.append(latest - p[0][0])
    k = len(chosen)
    total_idle = sum(v[2] for v in stats.values()) / k
    print(f"{len(passes)} passes after the last graph kernel; passes {first}..{last - 1}: "
          f"{sum(walls) / k / 1e3:.1f} us wall per pass ({min(walls) / 1e3:.1f}-{max(walls) / 1e3:.1f}), "
          f"{sum(len(p) for p in chosen) / k:.0f} kernels, {total_idle / 1e3:.1f} us idle")
    print("| kernel | launches | charged us | share | of which idle us | sum of durations us |")
    print("|---|---|---|---|---|---|")
    wall = sum(walls) / k
    for name, (n, charged, idle, dur) in sorted(stats.items(), key=lambda kv: -kv[1][1])[: args.top]:
        print(f"| {name} | {n / k:.0f} | {charged / k / 1e3:.1f} | {100 * charged / k / wall:.1f}% | "
              f"{idle / k / 1e3:.1f} | {dur / k / 1e3:.1f} |")


if __name__ == "__main__":
    main()
