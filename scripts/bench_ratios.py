#!/usr/bin/env python3
"""quest / reference throughput for every (preset, method) present in both JSONL files.

Usage: bench_ratios.py QUEST_BENCH_JSONL REFERENCE_JSONL
quest's lines come from `quest bench` (scripts/gpu.sh adds "method"); the reference's from its
driver's bench jobs ("quant" names the method). Prints a Markdown table.
"""
import json
import sys


def load(path, key):
    out = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            r = json.loads(line)
            if r.get("job") == "bench" and "tokens_per_s" in r:
                out[(r["preset"], r[key])] = r
    return out


def main():
    ours, ref = load(sys.argv[1], "method"), load(sys.argv[2], "quant")
    print("| preset | method | quest tokens/s | reference tokens/s | ratio | quest MFU |")
    print("|---|---|---|---|---|---|")
    for k in sorted(ours.keys() & ref.keys()):
        q, r = ours[k]["tokens_per_s"], ref[k]["tokens_per_s"]
        mfu = ours[k].get("mfu")
        print(f"| {k[0]} | {k[1]} | {q:,.0f} | {r:,.0f} | {q / r:.2f} | {100 * mfu:.1f}% |" if mfu else
              f"| {k[0]} | {k[1]} | {q:,.0f} | {r:,.0f} | {q / r:.2f} | - |")


if __name__ == "__main__":
    main()
