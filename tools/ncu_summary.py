#!/usr/bin/env python3
"""Sums an ncu CSV (--csv --page raw --metrics gpu__time_duration.sum) per kernel name:
launches, total and mean microseconds, share of the total. Usage: ncu_summary.py FILE.csv"""
import csv
import sys
from collections import defaultdict


def short_name(name: str) -> str:
    # "void bf::cuda::(anonymous namespace)::gemv_kernel<1, 4, false, false>(...)" -> gemv_kernel<1, 4, false, false>
    name = name.split("(")[0] if not name.startswith("void ") else name[5:].split("(")[0]
    return name.replace("bf::cuda::", "").replace("(anonymous namespace)::", "")


def main(path: str) -> None:
    rows = list(csv.reader(open(path, newline="")))
    head = next(i for i, r in enumerate(rows) if "Kernel Name" in r)
    cols = rows[head]
    name_col, time_col = cols.index("Kernel Name"), cols.index("gpu__time_duration.sum")
    grid_col = cols.index("Grid Size") if "Grid Size" in cols else None
    totals, counts, order = defaultdict(float), defaultdict(int), []
    for r in rows[head + 1:]:
        try:
            ns = float(r[time_col].replace(",", ""))
        except (ValueError, IndexError):
            continue  # the units row
        key = short_name(r[name_col])
        if grid_col is not None:
            key += f" grid {r[grid_col]}"
        if key not in totals:
            order.append(key)
        totals[key] += ns / 1e3
        counts[key] += 1
    total = sum(totals.values())
    print(f"{sum(counts.values())} kernels, {total:.1f} us in kernels (each timed alone)")
    print("| kernel | launches | total us | mean us | share |")
    print("|---|---|---|---|---|")
    for key in sorted(order, key=lambda k: -totals[k]):
        print(f"| {key} | {counts[key]} | {totals[key]:.1f} | {totals[key] / counts[key]:.2f} | "
              f"{100 * totals[key] / total:.1f}% |")


if __name__ == "__main__":
    main(sys.argv[1])
