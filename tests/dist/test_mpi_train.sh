#!/usr/bin/env bash
# `mpirun -np 2 quest train` on the CPU: the same loss curve as one process with twice the
# gradient accumulation, one complete checkpoint, and that checkpoint resumed on one process
# continues the curve exactly as the two ranks would have.
# Usage: test_mpi_train.sh QUEST_BINARY SOURCE_DIR MPIEXEC
set -u
source "$(dirname "$0")/mpi_common.sh"
TINY+=(--device cpu --eval-every 4)

# Two ranks, 8 sequences per micro-batch (4 each) vs one process, 4 sequences x 2 accumulations.
"${MPI[@]}" -np 2 "$QUEST" train "${TINY[@]}" --steps 8 --batch-size 8 --out "$T/np2" >"$T/np2.out" 2>&1 ||
  { fail "mpirun -np 2 quest train failed"; cat "$T/np2.out"; }
"$QUEST" train "${TINY[@]}" --steps 8 --batch-size 4 --grad-accum 2 --out "$T/np1" >"$T/np1.out" 2>&1 ||
  { fail "quest train failed"; cat "$T/np1.out"; }
same_losses "$T/np2" "$T/np1"
grep -q "data parallel: 2 ranks over mpi" "$T/np2.out" || fail "the 2-rank run did not say it ran on 2 ranks"
[[ $(grep -c '"type":"train"' "$T/np2/log.jsonl") -eq 8 ]] || fail "the log of the 2-rank run is not written once"

# Stop the two ranks at step 4 (checkpoint), resume with the same options on one process.
"${MPI[@]}" -np 2 "$QUEST" train "${TINY[@]}" --steps 8 --batch-size 8 --stop-at 4 --out "$T/half" >"$T/half.out" 2>&1 ||
  { fail "mpirun -np 2 quest train --stop-at 4 failed"; cat "$T/half.out"; }
"$QUEST" train "${TINY[@]}" --steps 8 --batch-size 8 --resume "$T/half/checkpoint.bin" --out "$T/resumed" >"$T/resumed.out" 2>&1 ||
  { fail "resuming the 2-rank checkpoint on one process failed"; cat "$T/resumed.out"; }
grep -q "resumed from .* at step 4" "$T/resumed.out" || fail "no resume message"
same_losses "$T/resumed" "$T/np2" 5

# And back: that one-process checkpoint (step 4) continued on two ranks.
"$QUEST" train "${TINY[@]}" --steps 8 --batch-size 8 --stop-at 4 --out "$T/half1" >"$T/half1.out" 2>&1 || fail "--stop-at on one process failed"
"${MPI[@]}" -np 2 "$QUEST" train "${TINY[@]}" --steps 8 --batch-size 8 --resume "$T/half1/checkpoint.bin" --out "$T/resumed2" >"$T/resumed2.out" 2>&1 ||
  { fail "resuming a 1-process checkpoint on two ranks failed"; cat "$T/resumed2.out"; }
same_losses "$T/resumed2" "$T/np1" 5
finish
