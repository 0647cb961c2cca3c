#!/usr/bin/env bash
# Bad input to the CLI: a clear message, a non-zero exit, never a crash or a half-written file.
# Usage: test_errors.sh QUEST_BINARY SOURCE_DIR
set -uo pipefail
QUEST=$1
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
fails=0

# expect_error "WORDS" ARGS...: the command exits with 1 or 2 (not a signal) and stderr has WORDS.
expect_error() {
  local words=$1; shift
  "$QUEST" "$@" >"$TMP/out" 2>"$TMP/err"
  local rc=$?
  if [[ $rc -eq 0 || $rc -ge 128 ]] || ! grep -qi -- "$words" "$TMP/err"; then
    echo "FAIL: quest $* -> exit $rc, expected an error containing '$words'; stderr:"; cat "$TMP/err"
    fails=$((fails + 1))
  fi
}

expect_error "preset" train --preset 31M --data "$TMP"
expect_error "--bogus" train --bogus
expect_error "lr" train --lr 5 --data "$TMP"
expect_error "steps" train --steps 0
expect_error "does not exist\|no shard\|not found" train --data "$TMP/nowhere" --out "$TMP/run"
printf 'garbage' >"$TMP/bad.ck"
expect_error "not a quest checkpoint" generate "$TMP/bad.ck"
expect_error "checkpoint" generate "$TMP/missing.ck"
expect_error "bits\|lsq" train --quant lsq --bits 1 --data "$TMP" --out "$TMP/run2"

# A shard with a wrong magic is refused by name.
mkdir -p "$TMP/data"
head -c 2048 /dev/zero >"$TMP/data/train-000000.bin"
expect_error "magic" train --data "$TMP/data" --out "$TMP/run3" --steps 1
# A truncated shard: right header, too few tokens.
python3 - "$TMP/data/train-000000.bin" <<'PY'
import struct, sys
hdr = [20240520, 1, 1000] + [0] * 253
open(sys.argv[1], "wb").write(struct.pack("<256i", *hdr) + b"\0" * 100)
PY
expect_error "size\|truncated" train --data "$TMP/data" --out "$TMP/run4" --steps 1

# Nothing half-written: no temporary files left anywhere under TMP.
if find "$TMP" -name '*.tmp*' | grep -q .; then
  echo "FAIL: temporary files left behind:"; find "$TMP" -name '*.tmp*'; fails=$((fails + 1))
fi
# Failed runs leave no checkpoint.
if find "$TMP" -name 'checkpoint.bin' | grep -q .; then echo "FAIL: a failed run wrote a checkpoint"; fails=$((fails + 1)); fi

[[ $fails -eq 0 ]] && echo "all CLI error cases passed"
exit $((fails > 0))
