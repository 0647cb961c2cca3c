#!/usr/bin/env bash
# Bad data-parallel set-ups end every rank with a clear message, never a hang: a batch the world
# size does not divide, ranks started with different options, a rank that hangs (the others time
# out) or dies, launch variables without an MPI launcher, a device without a data-parallel step.
# Usage: test_mpi_errors.sh QUEST_BINARY SOURCE_DIR MPIEXEC
set -u
source "$(dirname "$0")/mpi_common.sh"

# expect_error SECONDS "WORDS" COMMAND...: exits non-zero within SECONDS, the output has WORDS.
expect_error() {
  local limit=$1 words=$2; shift 2
  local start=$SECONDS
  timeout $((limit + 30)) "$@" >"$T/out" 2>&1
  local rc=$? took=$((SECONDS - start))
  if [[ $rc -eq 0 || $rc -eq 124 ]] || ((took > limit)) || ! grep -qi -- "$words" "$T/out"; then
    fail "exit $rc after ${took}s (limit ${limit}s), expected an error with '$words': $*"; tail -20 "$T/out"
  fi
}

CPU=(--device cpu --eval-every 0)
expect_error 30 "batch size 3 is not divisible by the world size 2" \
  "${MPI[@]}" -np 2 "$QUEST" train "${TINY[@]}" "${CPU[@]}" --steps 2 --batch-size 3 --out "$T/a"
# Rank 1 started with another seed (mpirun's MPMD form: one program line per rank).
expect_error 30 "training config of rank(s) 1 differs from rank 0" \
  "${MPI[@]}" -np 1 "$QUEST" train "${TINY[@]}" "${CPU[@]}" --steps 2 --batch-size 2 --seed 1 --out "$T/b" : \
  -np 1 "$QUEST" train "${TINY[@]}" "${CPU[@]}" --steps 2 --batch-size 2 --seed 2 --out "$T/b"
expect_error 30 "not implemented for this engine yet\|without the CUDA backend\|no CUDA device" \
  "${MPI[@]}" -np 2 "$QUEST" train "${TINY[@]}" --steps 2 --batch-size 2 --device cuda --out "$T/c"
# torchrun-style variables on a process no MPI launcher started: nothing connects the ranks.
expect_error 30 "MPI sees rank 0 of 1" env RANK=0 WORLD_SIZE=2 MASTER_ADDR=localhost MASTER_PORT=29500 \
  "$QUEST" train "${TINY[@]}" "${CPU[@]}" --steps 2 --batch-size 2 --out "$T/d"

# rank_pid MPIRUN_PID RANK: the process id of that rank (a child of mpirun), waiting for it.
rank_pid() {
  for _ in $(seq 100); do
    for p in $(pgrep -P "$1"); do
      tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2" && { echo "$p"; return; }
    done
    sleep 0.1
  done
}
# fault SIGNAL WORDS LIMIT: a long 2-rank run; once it logs its first step, rank 1 gets SIGNAL;
# the job must end within LIMIT seconds with WORDS in its output.
fault() {
  local sig=$1 words=$2 limit=$3 dir="$T/fault-$1"
  "${MPI[@]}" -np 2 "$QUEST" train "${TINY[@]}" "${CPU[@]}" --steps 100000 --batch-size 2 \
    --dist-timeout 3 --out "$dir" >"$T/fault.out" 2>&1 &
  local job=$! start=$SECONDS
  for _ in $(seq 300); do [[ -s $dir/log.jsonl ]] && break; sleep 0.1; done
  local victim; victim=$(rank_pid "$job" 1)
  [[ -n $victim ]] || { fail "no rank 1 under mpirun $job"; kill "$job"; wait "$job"; return; }
  kill -"$sig" "$victim"
  local t0=$SECONDS
  while kill -0 "$job" 2>/dev/null && ((SECONDS - t0 < limit + 30)); do sleep 0.2; done
  if kill -0 "$job" 2>/dev/null; then
    fail "the job still runs $((SECONDS - t0))s after rank 1 got SIG$sig"
    kill -KILL "$victim" 2>/dev/null; kill "$job"
  fi
  wait "$job"
  local rc=$? took=$((SECONDS - t0))
  ((rc != 0)) || fail "the job exited 0 after rank 1 got SIG$sig"
  ((took <= limit)) || fail "the job took ${took}s (limit ${limit}s) to end after rank 1 got SIG$sig"
  grep -qi -- "$words" "$T/fault.out" || { fail "no '$words' after SIG$sig"; tail -20 "$T/fault.out"; }
  kill -KILL "$victim" 2>/dev/null
}
# A hung rank (stopped): rank 0's collective times out after --dist-timeout 3 and ends the job.
fault STOP "did not complete within 3 s" 15
# A dead rank: the launcher notices and ends the job.
fault KILL "signal 9\|killed" 15
finish
