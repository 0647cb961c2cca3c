#!/usr/bin/env python3
"""Compares the data-parallel runs of `scripts/gpu.sh` stage `multigpu`.

  dp_compare.py equal ONE_RANK_LOG N_RANK_LOG [TOL]   loss curves (train records of log.jsonl)
  dp_compare.py scale ONE_GPU_LOG N_GPU_LOG N [SKIP]   tokens/s and scaling efficiency per GPU

`equal`: N ranks with the global batch against one process with N-fold gradient accumulation
see the same windows; the losses agree up to the order of the gradient sums (exit 1 beyond TOL,
relative, default 1e-2). `scale`: mean tokens/s of the train records after the first SKIP
(default 3: warm-up) steps; efficiency = tokens/s on N / (N x tokens/s on one).
"""
import json
import sys


def records(path):
    with open(path) as f:
        return [r for r in map(json.loads, f) if r.get("type") == "train"]


def main(argv):
    if len(argv) >= 3 and argv[0] == "equal":
        a, b = records(argv[1]), records(argv[2])
        tol = float(argv[3]) if len(argv) > 3 else 1e-2
        if not a or len(a) != len(b):
            print(f"dp equal: {len(a)} and {len(b)} train records: the runs did not both finish")
            return 1
        worst = max(abs(x["loss"] - y["loss"]) / abs(x["loss"]) for x, y in zip(a, b))
        ok = worst <= tol
        print(f"dp equal: {len(a)} steps, max relative loss difference {worst:.2e} (limit {tol:g}): "
              f"{'ok' if ok else 'FAILED'}; final loss {a[-1]['loss']:.5f} / {b[-1]['loss']:.5f}")
        return 0 if ok else 1
    if len(argv) >= 4 and argv[0] == "scale":
        skip = int(argv[4]) if len(argv) > 4 else 3
        n = int(argv[3])
        tps = []
        for path in argv[1:3]:
            r = records(path)[skip:]
            if not r:
                print(f"dp scale: no train records after step {skip} in {path}")
                return 1
            tps.append(sum(x["tokens_per_s"] for x in r) / len(r))
        eff = tps[1] / (n * tps[0])
        print(f"dp scale: 1 GPU {tps[0]:,.0f} tokens/s, {n} GPUs {tps[1]:,.0f} tokens/s, "
              f"speed-up {tps[1] / tps[0]:.2f}, efficiency per GPU {eff:.1%}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
