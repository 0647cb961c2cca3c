#!/usr/bin/env bash
# `quest bench` on the CPU: throughput and a per-op profile of a tiny model, a JSON record the GPU
# script parses, and clear errors for bad options.
# Usage: test_bench.sh QUEST_BINARY SOURCE_DIR
set -uo pipefail
QUEST=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

"$QUEST" bench --preset tiny --device cpu --batch-size 2 --seq-len 32 --steps 2 --warmup 1 \
  --quant quest --bits 4 --profile >"$TMP/out" 2>"$TMP/err" || fail "bench exited $?: $(cat "$TMP/err")"
grep -q "tokens/s" "$TMP/out" || fail "no tokens/s line"
grep -q "matmul_forward" "$TMP/out" || fail "no profile table"
python3 - "$TMP/out" <<'PY' || fail "bad JSON record"
import json, sys
rec = [json.loads(l) for l in open(sys.argv[1]) if l.startswith("{")][-1]
assert rec["job"] == "bench" and rec["tokens_per_s"] > 0 and rec["seq_len"] == 32, rec
assert rec["quant"].startswith("w=hadamard-trust:4"), rec["quant"]
assert any(p["op"] == "matmul_forward" and p["calls"] > 0 for p in rec["profile"]), rec["profile"]
PY

"$QUEST" bench --preset 31M >"$TMP/out" 2>"$TMP/err" && fail "bench accepted preset 31M"
grep -qi "preset" "$TMP/err" || fail "no message naming the preset: $(cat "$TMP/err")"
"$QUEST" bench --steps 0 >"$TMP/out" 2>"$TMP/err" && fail "bench accepted --steps 0"

[[ $fails -eq 0 ]] && echo "bench CLI: all checks passed"
exit $((fails > 0))
