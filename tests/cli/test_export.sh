#!/usr/bin/env bash
# `quest export`, `quest eval`, `quest generate`, `quest inspect` and `quest plot` end to end on a
# tiny trained model: the packed export evaluates and generates exactly like its checkpoint; bad
# exports and mismatched tokenizers are clear errors with a non-zero exit.
# Usage: test_export.sh QUEST_BINARY SOURCE_DIR
set -u
QUEST=${1:?quest binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/quest-cli-export-XXXXXX")
trap 'rm -rf "$T"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect CODE PATTERN -- command...: exit status CODE (or "nonzero", never a signal) and the output
# matching PATTERN.
expect() {
  local code=$1 pattern=$2
  shift 3
  "$@" >"$T/stdout" 2>"$T/stderr"
  local rc=$?
  if [[ $code == nonzero ]]; then
    [[ $rc -ne 0 && $rc -lt 128 ]] || { fail "expected an error exit, got $rc: $*"; cat "$T/stderr"; }
  else
    [[ $rc -eq $code ]] || { fail "exit $rc, expected $code: $*"; cat "$T/stderr"; }
  fi
  [[ -z $pattern ]] || grep -qi -- "$pattern" "$T/stderr" "$T/stdout" ||
    { fail "no '$pattern' in the output of: $*"; cat "$T/stderr" "$T/stdout"; }
}

# A small corpus, two SentencePiece tokenizers (different vocabularies: different identities).
python3 - "$T" <<'PY'
import json, random, sys
random.seed(1)
words = "the whale sea ship captain white and of a to in his Ahab harpoon boat deck".split()
chapters = []
for c in range(30):
    lines = [" ".join(random.choice(words) for _ in range(random.randint(3, 12))) + "." for _ in range(20)]
    chapters.append(f"CHAPTER {c + 1}.\n\n" + "\n".join(lines) + "\n")
open(f"{sys.argv[1]}/book.txt", "w").write("\n\n\n".join(chapters))
items = [
    {"ctx": "Sailing: the captain and his", "endings": ["whale sea.", "ship deck.", "harpoon.", "boat."], "label": 1},
    {"ctx": "Whaling: Ahab [title] the white", "endings": ["whale.", "the sea", "of a to", "deck"], "label": 0},
    {"ctx": "Boats: a boat", "endings": ["to the sea.", "and", "captain white", "x"], "label": "2"},
]
with open(f"{sys.argv[1]}/hs.jsonl", "w") as f:
    for it in items:
        f.write(json.dumps(it) + "\n")
PY
expect 0 "wrote" -- "$QUEST" tokenizer train "$T/book.txt" -o "$T/tok.model" --vocab-size 300
expect 0 "wrote" -- "$QUEST" tokenizer train "$T/book.txt" -o "$T/tok2.model" --vocab-size 320
expect 0 "" -- "$QUEST" prepare "$T/book.txt" -o "$T/sp" --tokenizer "$T/tok.model" --split-blank-lines 3 --val-documents 4
expect 0 "" -- "$QUEST" prepare "$T/book.txt" -o "$T/sp2" --tokenizer "$T/tok2.model" --split-blank-lines 3 --val-documents 4

# A tiny W4A4 QuEST model, a few steps.
expect 0 "done" -- "$QUEST" train --data "$T/sp" --n-layer 1 --d-model 128 --head-dim 64 --seq-len 32 \
  --steps 6 --batch-size 4 --quant quest --bits 4 --eval-every 3 --eval-windows 4 --sample-tokens 0 --out "$T/run"
CK=$T/run/checkpoint.bin

expect 0 "packed export" -- "$QUEST" export "$CK" -o "$T/m32.safetensors" --float-format f32
expect 0 "packed export" -- "$QUEST" export "$CK" -o "$T/m.safetensors"
expect 0 "packed export" -- "$QUEST" export "$CK" -o "$T/m8.safetensors" --float-format int8
expect 0 "Hugging Face export" -- "$QUEST" export "$CK" --hf "$T/hf" --hf-reference-tokens 4
for f in config.json model.safetensors quest_reference.safetensors; do
  [[ -s $T/hf/$f ]] || fail "no $f in the Hugging Face export"
done
# Re-exporting an export copies its codes: the same file.
expect 0 "packed export" -- "$QUEST" export "$T/m32.safetensors" -o "$T/again.safetensors" --float-format f32
cmp -s "$T/m32.safetensors" "$T/again.safetensors" || fail "re-exporting an export changed it"
s32=$(stat -c %s "$T/m32.safetensors"); s16=$(stat -c %s "$T/m.safetensors"); s8=$(stat -c %s "$T/m8.safetensors")
((s8 < s16 && s16 < s32)) || fail "sizes not ordered int8 < bf16 < f32: $s8 $s16 $s32"

# The f32 export evaluates exactly like the checkpoint (on the CPU); the others print their sizes.
expect 0 "device: cpu" -- "$QUEST" eval "$CK" --data "$T/sp" --device cpu
ck_loss=$(grep '^loss' "$T/stdout")
expect 0 "artifact: $s32 bytes raw" -- "$QUEST" eval "$T/m32.safetensors" --data "$T/sp" --zstd-level 3 --device cpu
[[ $(grep '^loss' "$T/stdout") == "$ck_loss" ]] || fail "export loss $(grep '^loss' "$T/stdout") != checkpoint $ck_loss"
# --device cuda runs on the GPU where there is one, else says why not (no device, or no CUDA backend).
if "$QUEST" eval "$CK" --data "$T/sp" --device cuda >"$T/stdout" 2>"$T/stderr"; then
  grep -q '^device: cuda' "$T/stdout" || fail "--device cuda did not run on the GPU: $(cat "$T/stdout")"
else
  rc=$?
  ((rc < 128)) || fail "--device cuda crashed (exit $rc)"
  grep -q "^error: --device cuda: .*\(no CUDA device\|without the CUDA backend\)" "$T/stderr" ||
    fail "--device cuda without a GPU: no clear error: $(cat "$T/stderr")"
fi
expect 0 "zstd -3" -- "$QUEST" eval "$T/m8.safetensors" --data "$T/sp" --zstd-level 3 --json "$T/e.json"
grep -q '"bits_per_byte"' "$T/e.json" || fail "no bits_per_byte in the JSON results"
expect 0 "hellaswag: 3 items" -- "$QUEST" eval "$T/m.safetensors" --hellaswag "$T/hs.jsonl" --tokenizer "$T/tok.model" --zstd-level 1
expect 0 "hellaswag: 2 items" -- "$QUEST" eval "$CK" --hellaswag "$T/hs.jsonl" --limit 2 --tokenizer "$T/tok.model"

# Generation from the export is the checkpoint's.
expect 0 "sample" -- "$QUEST" generate "$T/m32.safetensors" -n 8 --seed 1 --prompt "the whale" --tokenizer "$T/tok.model"
cp "$T/stdout" "$T/gen_export"
expect 0 "sample" -- "$QUEST" generate "$CK" -n 8 --seed 1 --prompt "the whale" --tokenizer "$T/tok.model"
cmp -s "$T/stdout" "$T/gen_export" || fail "generation from the export differs from the checkpoint's"

expect 0 "quest-packed" -- "$QUEST" inspect "$T/m.safetensors" --json "$T/i.json"
grep -q '"dequant_sum"' "$T/i.json" || fail "inspect: no dequantized sums"
expect 0 "wrote" -- "$QUEST" plot "$T/run" -o "$T/p.svg"
head -c 4 "$T/p.svg" | grep -q "<svg" || fail "plot: not an SVG"

# Bad input.
head -c 5000 "$T/m.safetensors" >"$T/cut.safetensors"
expect nonzero "truncated" -- "$QUEST" eval "$T/cut.safetensors" --data "$T/sp"
cp "$T/m.safetensors" "$T/flip.safetensors"
printf '\xff' | dd of="$T/flip.safetensors" bs=1 seek=$((s16 - 100)) conv=notrunc status=none
expect nonzero "corrupt" -- "$QUEST" eval "$T/flip.safetensors" --data "$T/sp"
expect nonzero "corrupt" -- "$QUEST" generate "$T/flip.safetensors"
expect nonzero "not a quest packed export" -- "$QUEST" eval "$T/hf/model.safetensors" --data "$T/sp"
printf 'garbage' >"$T/garbage.bin"
expect nonzero "not a quest checkpoint or packed export" -- "$QUEST" eval "$T/garbage.bin" --data "$T/sp"
expect nonzero "tokenizer mismatch" -- "$QUEST" eval "$T/m.safetensors" --data "$T/sp2"
expect nonzero "tokenizer mismatch" -- "$QUEST" eval "$T/m.safetensors" --hellaswag "$T/hs.jsonl" --tokenizer "$T/tok2.model"
expect nonzero "nothing to evaluate" -- "$QUEST" eval "$CK"
expect nonzero "nothing to write" -- "$QUEST" export "$CK"
expect nonzero "int8" -- "$QUEST" export "$CK" --hf "$T/hf8" --float-format int8
expect nonzero "no train records\|no run log" -- "$QUEST" plot "$T/sp"
echo '{"ctx": "a", "endings": ["b"], "label": 0}' >"$T/bad.jsonl"
expect nonzero "bad.jsonl:1" -- "$QUEST" eval "$T/m.safetensors" --hellaswag "$T/bad.jsonl" --tokenizer "$T/tok.model"

# Nothing half-written.
if find "$T" -name '*.tmp*' | grep -q .; then fail "temporary files left: $(find "$T" -name '*.tmp*')"; fi
[[ ! -e $T/hf8 ]] || [[ -z $(ls -A "$T/hf8") ]] || fail "a refused export wrote files"

[[ $failures -eq 0 ]] && echo "all export CLI checks passed"
exit $((failures > 0))
