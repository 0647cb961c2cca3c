#!/usr/bin/env bash
# The GPU script: builds quest with CUDA, runs the GPU tests, the benchmarks and the fidelity runs,
# exports and re-evaluates the fidelity models, and writes logs and a summary to OUTDIR.
# Reproduces docs/PERF.md and docs/GPU_RESULTS.md on any CUDA machine.
#
#   scripts/gpu.sh OUTDIR
# Environment:
#   QUEST_GPU_STAGES   comma list of stages (default build,test,bench,fidelity,export)
#   QUEST_DATA         folder with train-00.jsonl.zst and val.jsonl.zst (default ../shared/data/gutenberg)
#   QUEST_REFERENCE    the reference implementation (e.g. ../shared/baseline): run side by side
#   QUEST_BUILD_DIR    where the build is (default build-gpu)
#   QUEST_WORK         prepared data, runs and checkpoints (default OUTDIR/work)
#   QUEST_GPT2         folder with encoder.json + vocab.bpe (default: the set-up cache)
#   QUEST_GTEST_SRC    GoogleTest sources or a .tar.xz of them, when libgtest-dev is not installed
#   QUEST_FID_STEPS    steps of each fidelity run (default 1000)
#   QUEST_FID_METHODS  fidelity methods (default "bf16 quest4 lsq4 ste4 quest2 quest1")
#   QUEST_FID_SEED     seed of the fidelity runs (default 0)
#   QUEST_HELLASWAG    HellaSwag validation JSONL for `export` (default
#                      ../shared/data/hellaswag/hellaswag_val.jsonl.zst; skipped when missing)
#   QUEST_HELLASWAG_LIMIT  evaluate the first N HellaSwag items only (default: all)
#   QUEST_BENCH_PRESETS, QUEST_BENCH_METHODS, QUEST_BENCH_STEPS  what `bench` measures
#                      (default "30M 200M", "bf16 quest4 quest1", 20)
#   QUEST_DP_RANKS     `multigpu`: ranks (default: the machine's GPUs; the stage needs 2 or more)
#   QUEST_DP_DEVICE    `multigpu`: cuda (default) or cpu (a dry run of the stage on CPUs)
#   QUEST_DP_PRESET, QUEST_DP_BATCH, QUEST_DP_STEPS  `multigpu` equality run (default 30M, 16
#                      sequences a rank, 20 steps)
#   QUEST_DP_SCALE_PRESET, QUEST_DP_SCALE_BATCH, QUEST_DP_SCALE_STEPS  `multigpu` throughput run
#                      (default 200M, 64 sequences a GPU, 15 steps)
# Stages run in the order build, test, bench, fidelity, export, multigpu, reference (the
# reference's benchmarks after ours, in the same call, so the ratios compare one machine in one
# state). `multigpu` (not in the default list) runs data parallel over NCCL on all GPUs: N ranks
# against one GPU with N-fold accumulation (the same loss curve), and the throughput from 1 to N
# GPUs with the scaling efficiency per GPU (scripts/dp_compare.py).
# `export` needs the fidelity runs' checkpoints in QUEST_WORK (from this call or an earlier one).
set -uo pipefail
OUT=${1:?usage: scripts/gpu.sh OUTDIR}
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
cd "$(dirname "$0")/.."
STAGES=",${QUEST_GPU_STAGES:-build,test,bench,fidelity,export},"
DATA=$(realpath -m "${QUEST_DATA:-../shared/data/gutenberg}")  # absolute: the reference stage cds
GPT2=${QUEST_GPT2:-}
BUILD=${QUEST_BUILD_DIR:-build-gpu}
# Prepared data, checkpoints and runs (large) go to WORK; logs and the summary to OUT.
WORK=${QUEST_WORK:-$OUT/work}
mkdir -p "$WORK"
SUMMARY="$OUT/summary.md"
echo "# quest GPU run $(date -u +%Y-%m-%dT%H:%MZ)" >"$SUMMARY"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >>"$SUMMARY" 2>&1
stage() { [[ "$STAGES" == *",$1,"* ]]; }
log() { echo "$*" | tee -a "$SUMMARY"; }

if stage build; then
  gtest_args=()
  if ! [[ -f /usr/include/gtest/gtest.h ]]; then
    src=${QUEST_GTEST_SRC:-/usr/src/googletest}
    if [[ "$src" == *.tar.xz ]]; then mkdir -p /tmp/quest-gtest && tar -C /tmp/quest-gtest -xJf "$src" && src=/tmp/quest-gtest/googletest; fi
    gtest_args=(-DQUEST_GTEST_SOURCE="$src")
  fi
  gen=(); command -v ninja >/dev/null && gen=(-G Ninja)
  cmake -S . -B "$BUILD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DQUEST_CUDA=ON \
    -DCMAKE_CUDA_COMPILER=/usr/local/cuda/bin/nvcc -DCMAKE_CUDA_ARCHITECTURES=${QUEST_CUDA_ARCH:-90a-real} \
    "${gtest_args[@]}" >"$OUT/build.log" 2>&1 &&
    cmake --build "$BUILD" -j"$(nproc)" >>"$OUT/build.log" 2>&1
  rc=$?
  log "build: exit $rc"
  [[ $rc -ne 0 ]] && { tail -50 "$OUT/build.log"; exit 1; }
fi
QUEST=$BUILD/quest

if stage test; then
  "$BUILD/test_cuda" --gtest_color=no >"$OUT/test_cuda.log" 2>&1
  log "GPU tests: exit $? ($(grep -E '^\[  (PASSED|FAILED)' "$OUT/test_cuda.log" | tr '\n' ' '))"
  grep -E '^\[  FAILED' "$OUT/test_cuda.log" | head -30 | tee -a "$SUMMARY"
fi

# Gutenberg with GPT-2 BPE, end-of-text before each book: train from train-00, val from val.
prepare_data() {
  [[ -f "$WORK/gutenberg-gpt2/meta.json" ]] && return 0
  local tok=gpt2; [[ -n "$GPT2" ]] && tok="gpt2:$GPT2"
  "$QUEST" prepare "$DATA/train-00.jsonl.zst" --val-inputs "$DATA/val.jsonl.zst" --tokenizer "$tok" \
    --out "$WORK/gutenberg-gpt2" --no-progress >"$OUT/prepare.log" 2>&1
}
DATADIR="$WORK/gutenberg-gpt2"

# Throughput on synthetic tokens (`quest bench`), 64 x 512 micro-batches, with the per-op profile
# of one step; one JSON line per run in bench.jsonl. Then the kernel microbenchmarks. 3 warm-up
# and 20 timed steps: the reference's bench() protocol, so the two are timed alike (longer runs
# read a few percent lower on the H100 as it heats: 30 steps after 5 gave 2-4% less at 30M).
if stage bench; then
  for preset in ${QUEST_BENCH_PRESETS:-30M 200M}; do
    for q in ${QUEST_BENCH_METHODS:-bf16 quest4 quest1}; do
      qargs=(); [[ $q != bf16 ]] && qargs=(--quant quest --bits "${q#quest}")
      name="bench-$preset-$q"
      "$QUEST" bench --device cuda --preset "$preset" --batch-size 64 --steps "${QUEST_BENCH_STEPS:-20}" \
        --warmup 3 --profile "${qargs[@]}" >"$OUT/$name.log" 2>&1
      line=$(grep -E '^\{' "$OUT/$name.log" | tail -1)
      [[ -n "$line" ]] && echo "$line" | sed "s/^{/{\"method\":\"$q\",/" >>"$OUT/bench.jsonl"
      log "$(grep -E 'tokens/s' "$OUT/$name.log" | head -1 || echo "bench $preset $q failed")"
    done
  done
  # The kernel microbenchmarks (built with QUEST_BUILD_BENCH, the default): one quantized linear
  # layer at 7B and preset shapes against cuBLAS bf16, the activation quantizer, attention, RoPE
  # and AdamW against a copy, the int8 product on codes of other bit patterns (power) and against
  # the tensor cores' roof. Each prints its own table (docs/LOWBIT_GEMM.md, docs/PERF.md).
  # The 7B layer also as a stream over 8 layers' own buffers (--stream: a model's forward, each
  # layer's operands from memory, the GPU at its power cap), logged as bench_lowbit_linear-stream,
  # and as the same stream with the paths interleaved pass by pass (--paired: both at the same
  # clocks), logged as bench_lowbit_linear-paired; both print the SM clock each path ran at.
  for b in "bench_lowbit_linear --bits 4" "bench_lowbit_linear --bits 4 --only 7b --stream 1000" \
      "bench_lowbit_linear --bits 4 --only 7b --paired 300" \
      bench_s8_code_patterns bench_s8_roof bench_quantizer bench_attention bench_memory_ops; do
    exe=$BUILD/${b%% *}
    [[ -x "$exe" ]] || continue
    name=${b%% *}; [[ "$b" == *--stream* ]] && name+=-stream; [[ "$b" == *--paired* ]] && name+=-paired
    # shellcheck disable=SC2086
    $BUILD/$b >"$OUT/$name.log" 2>&1
    log "$name: exit $? (see $name.log)"
  done
fi

if stage fidelity; then
  prepare_data || { log "prepare failed"; tail "$OUT/prepare.log"; }
  steps=${QUEST_FID_STEPS:-1000}
  for m in ${QUEST_FID_METHODS:-bf16 quest4 lsq4 ste4 quest2 quest1}; do
    case $m in
      bf16) qargs=() ;;
      quest*) qargs=(--quant quest --bits "${m#quest}") ;;
      lsq*) qargs=(--quant lsq --bits "${m#lsq}") ;;
      ste*) qargs=(--quant ste --bits "${m#ste}") ;;
    esac
    "$QUEST" train --device cuda --preset 30M --data "$DATADIR" --batch-size 64 --steps "$steps" \
      --lr 1.2e-3 --seed "${QUEST_FID_SEED:-0}" --log-every 100 --eval-every 0 --sample-tokens 0 "${qargs[@]}" \
      --out "$WORK/runs/fid-$m" >"$OUT/fid-$m.log" 2>&1
    cp "$WORK/runs/fid-$m/log.jsonl" "$OUT/fid-$m.jsonl" 2>/dev/null
    loss=$(grep -o '"val_loss":[0-9.]*' "$OUT/fid-$m.jsonl" 2>/dev/null | tail -1 | cut -d: -f2)
    log "fidelity 30M $m ($steps steps): val loss ${loss:-failed}"
  done
fi

# The compressed models: each fidelity checkpoint exported (packed; f32 float tensors, so that the
# round trip is exact) and both evaluated on the GPU (validation loss, bits per byte, HellaSwag):
# eval-<method>-{checkpoint,export}.json and one summary line per method.
if stage export; then
  prepare_data || { log "prepare failed"; tail "$OUT/prepare.log"; }
  HS=${QUEST_HELLASWAG:-../shared/data/hellaswag/hellaswag_val.jsonl.zst}
  hs=()
  if [[ -f "$HS" ]]; then
    hs=(--hellaswag "$HS")
    [[ -n "${QUEST_HELLASWAG_LIMIT:-}" ]] && hs+=(--limit "$QUEST_HELLASWAG_LIMIT")
    [[ -n "$GPT2" ]] && hs+=(--tokenizer "gpt2:$GPT2")  # where prepare found the BPE files
  else
    log "export: no HellaSwag file at $HS (set QUEST_HELLASWAG); validation loss only"
  fi
  for m in ${QUEST_FID_METHODS:-bf16 quest4 lsq4 ste4 quest2 quest1}; do
    run="$WORK/runs/fid-$m"
    if [[ ! -f "$run/checkpoint.bin" ]]; then log "export $m: no checkpoint in $run"; continue; fi
    if ! "$QUEST" export "$run/checkpoint.bin" -o "$run/model.safetensors" --float-format f32 >"$OUT/export-$m.log" 2>&1; then
      log "export $m: failed ($(tail -1 "$OUT/export-$m.log"))"
      continue
    fi
    for kind in checkpoint export; do
      file="$run/checkpoint.bin"; [[ $kind == export ]] && file="$run/model.safetensors"
      "$QUEST" eval "$file" --device cuda --data "$DATADIR" "${hs[@]}" --batch-size 64 \
        --json "$OUT/eval-$m-$kind.json" >"$OUT/eval-$m-$kind.log" 2>&1 ||
        log "eval $m $kind: failed ($(tail -1 "$OUT/eval-$m-$kind.log"))"
    done
    log "$(python3 - "$m" "$OUT/eval-$m-checkpoint.json" "$OUT/eval-$m-export.json" <<'PY'
import json, sys
m, paths = sys.argv[1], sys.argv[2:]
try:
    ck, ex = (json.load(open(p)) for p in paths)
except (OSError, ValueError) as e:
    print(f"export {m}: no results ({e})")
    sys.exit()
a, b = ck["split"]["loss"], ex["split"]["loss"]
line = f"export {m}: val loss checkpoint {a:.6f} export {b:.6f} (rel diff {abs(b - a) / a:.2e})"
line += f", bpb {ex['split'].get('bits_per_byte', float('nan')):.4f}"
if "hellaswag" in ex:
    h = ex["hellaswag"]
    line += f", hellaswag {h['items']} items acc {h['acc']:.4f} acc_norm {h['acc_norm']:.4f}"
    if "hellaswag" in ck:
        line += f" (checkpoint {ck['hellaswag']['acc']:.4f}/{ck['hellaswag']['acc_norm']:.4f})"
art = ex.get("artifact", {})
line += f", artifact {art.get('raw_bytes')} B raw, {art.get('zstd_bytes')} B zstd -{art.get('zstd_level')} (f32 floats)"
print(line)
PY
)"
  done
fi

if stage multigpu; then
  dev=${QUEST_DP_DEVICE:-cuda}
  n=${QUEST_DP_RANKS:-$(nvidia-smi -L 2>/dev/null | grep -c '^GPU')}
  if (( n < 2 )); then
    log "multigpu: $n GPU(s) here; data parallel needs 2 or more (QUEST_DP_RANKS)"
  else
    prepare_data || { log "prepare failed"; tail "$OUT/prepare.log"; }
    mpi=(mpirun -np "$n" --bind-to none -x NCCL_NVLS_ENABLE=0 -x LD_LIBRARY_PATH -x OMP_NUM_THREADS)
    [[ $(id -u) == 0 ]] && mpi+=(--allow-run-as-root)
    export NCCL_NVLS_ENABLE=0 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    b=${QUEST_DP_BATCH:-16}
    run=(train --device "$dev" --preset "${QUEST_DP_PRESET:-30M}" --data "$DATADIR" --steps "${QUEST_DP_STEPS:-20}"
         --seed 0 --log-every 1 --eval-every 0 --eval-windows 64 --sample-tokens 0 --quant quest --bits 4)
    "$QUEST" "${run[@]}" --batch-size "$b" --grad-accum "$n" --out "$WORK/runs/dp-eq-1" >"$OUT/dp-eq-1.log" 2>&1
    "${mpi[@]}" "$QUEST" "${run[@]}" --batch-size $((b * n)) --out "$WORK/runs/dp-eq-$n" >"$OUT/dp-eq-$n.log" 2>&1
    log "$(python3 scripts/dp_compare.py equal "$WORK/runs/dp-eq-1/log.jsonl" "$WORK/runs/dp-eq-$n/log.jsonl" 2>&1)"
    b=${QUEST_DP_SCALE_BATCH:-64}
    run=(train --device "$dev" --preset "${QUEST_DP_SCALE_PRESET:-200M}" --data "$DATADIR"
         --steps "${QUEST_DP_SCALE_STEPS:-15}" --seed 0 --log-every 1 --eval-every 0 --eval-windows 64 --sample-tokens 0)
    "$QUEST" "${run[@]}" --batch-size "$b" --out "$WORK/runs/dp-scale-1" >"$OUT/dp-scale-1.log" 2>&1
    "${mpi[@]}" "$QUEST" "${run[@]}" --batch-size $((b * n)) --out "$WORK/runs/dp-scale-$n" >"$OUT/dp-scale-$n.log" 2>&1
    log "$(python3 scripts/dp_compare.py scale "$WORK/runs/dp-scale-1/log.jsonl" "$WORK/runs/dp-scale-$n/log.jsonl" "$n" 2>&1)"
  fi
fi

if [[ -n "${QUEST_REFERENCE:-}" ]] && stage reference; then
  (cd "$QUEST_REFERENCE" && PYTHONUNBUFFERED=1 python3 reference.py --split train="$DATA/train-00.jsonl.zst" \
    --split val="$DATA/val.jsonl.zst" ${QUEST_REFERENCE_JOBS:-bench:30M:bf16 bench:30M:quest4 bench:30M:quest1 bench:200M:bf16 bench:200M:quest4 bench:200M:quest1}) \
    >"$OUT/reference.log" 2>&1
  log "reference: exit $? (see reference.log)"
  grep -E '^\{' "$OUT/reference.log" | tee -a "$SUMMARY" >"$OUT/reference.jsonl"
  # quest / reference tokens/s for every (preset, method) both measured in this call.
  python3 scripts/bench_ratios.py "$OUT/bench.jsonl" "$OUT/reference.jsonl" | tee -a "$SUMMARY"
fi
echo "summary: $SUMMARY"
