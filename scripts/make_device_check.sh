#!/usr/bin/env bash
# Builds, on the CPU, what the device machine checks with the Python libraries
# (scripts/check_hf_export.py, scripts/check_safetensors_interop.py): small models trained a few
# steps on Moby Dick with a 512-token SentencePiece tokenizer, exported packed (one per code kind)
# with `quest inspect --json` listings, and exported for Hugging Face with reference logits.
# Usage: scripts/make_device_check.sh QUEST_BINARY OUT_DIR      (OUT_DIR about 15 MB)
set -euo pipefail
QUEST=$(realpath "${1:?quest binary}")
OUT=${2:?output directory}
CORPUS=${QUEST_CACHE:-$HOME/.cache/quest}/corpora/moby-dick.txt
[[ -f $CORPUS ]] || { echo "missing $CORPUS: run scripts/setup.sh" >&2; exit 1; }
rm -rf "$OUT" && mkdir -p "$OUT"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

"$QUEST" tokenizer train "$CORPUS" -o "$WORK/tok.model" --vocab-size 512 >/dev/null
"$QUEST" prepare "$CORPUS" -o "$WORK/data" --tokenizer "$WORK/tok.model" --split-blank-lines 3 --val-fraction 0.05 >/dev/null
MODEL=(--data "$WORK/data" --n-layer 2 --d-model 256 --head-dim 64 --seq-len 64 --batch-size 8 --sample-tokens 0
  --eval-every 0 --eval-windows 8 --log-every 10)
train() {  # NAME STEPS QUANT-OPTIONS...
  local name=$1 steps=$2; shift 2
  echo "training $name ($steps steps)"
  "$QUEST" train "${MODEL[@]}" --steps "$steps" --out "$WORK/$name" "$@" >/dev/null 2>&1
}
train w4a4 40 --quant quest --bits 4
train bf16 10 --quant none
train w3a3 3 --quant quest --bits 3
train fp4 3 --quant hadamard-fp4
train sparse48 3 --quant hadamard-sparse48 --bits 4
train lsq2 3 --quant lsq --bits 2
train pact5 3 --w-quant pact:5 --a-quant quest:8
train ste1 3 --quant ste --bits 1

packed() {  # NAME RUN FLOAT-FORMAT
  "$QUEST" export "$WORK/$2/checkpoint.bin" -o "$OUT/$1.safetensors" --float-format "$3" | tail -1
  "$QUEST" inspect "$OUT/$1.safetensors" --json "$OUT/$1.inspect.json" >/dev/null
}
packed w4a4 w4a4 bf16
packed w4a4_int8 w4a4 int8
for r in w3a3 fp4 sparse48 lsq2 pact5 ste1; do packed "$r" "$r" f32; done
"$QUEST" export "$WORK/w4a4/checkpoint.bin" --hf "$OUT/hf" --float-format f32 --hf-reference-tokens 48 2>/dev/null | tail -1
"$QUEST" export "$WORK/bf16/checkpoint.bin" --hf "$OUT/hf_bf16" --hf-reference-tokens 48 | tail -1
cp "$WORK/w4a4/log.jsonl" "$OUT/w4a4.log.jsonl"
du -sh "$OUT"
