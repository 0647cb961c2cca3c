#!/usr/bin/env bash
# `quest prepare` and `quest tokenizer train` end to end: exit codes, messages, and no partial or
# temporary files left behind. Usage: test_prepare.sh QUEST_BINARY SOURCE_DIR
set -u
QUEST=${1:?quest binary}
T=$(mktemp -d "${TMPDIR:-/tmp}/quest-cli-prepare-XXXXXX")
trap 'rm -rf "$T"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }

# expect CODE PATTERN -- command...: exit status CODE (or "nonzero") and stderr matching PATTERN.
expect() {
  local code=$1 pattern=$2
  shift 3
  "$@" >"$T/stdout" 2>"$T/stderr"
  local rc=$?
  if [[ $code == nonzero ]]; then
    [[ $rc -ne 0 ]] || fail "expected a non-zero exit: $*"
  else
    [[ $rc -eq $code ]] || { fail "exit $rc, expected $code: $*"; cat "$T/stderr"; }
  fi
  [[ -z $pattern ]] || grep -q -- "$pattern" "$T/stderr" "$T/stdout" ||
    { fail "no '$pattern' in the output of: $*"; cat "$T/stderr"; }
}
no_files() {  # the directory is missing or empty
  [[ ! -d $1 ]] || [[ -z $(ls -A "$1") ]] || fail "files left in $1: $(ls -A "$1" | head -3)"
}

# A small corpus: 40 chapters separated by 3 blank lines, and the same as JSONL.
python3 - "$T" <<'PY'
import json, random, sys
random.seed(1)
words = "the whale sea ship captain white and of a to in his Ahab harpoon caf\u00e9 1851".split()
chapters = []
for c in range(40):
    lines = [" ".join(random.choice(words) for _ in range(random.randint(3, 12))) + "." for _ in range(20)]
    chapters.append(f"CHAPTER {c + 1}.\n\n" + "\n".join(lines) + "\n")
open(f"{sys.argv[1]}/book.txt", "w").write("\n\n\n".join(chapters))
with open(f"{sys.argv[1]}/docs.jsonl", "w") as f:
    for i, ch in enumerate(chapters):
        f.write(json.dumps({"id": i, "text": ch}) + "\n")
PY

expect 0 "Tokenize a corpus" -- "$QUEST" prepare --help
expect 0 "SentencePiece" -- "$QUEST" tokenizer train --help

# Tokenizer training, then preparation with it.
expect 0 "wrote" -- "$QUEST" tokenizer train "$T/book.txt" -o "$T/tok.model" --vocab-size 300
[[ -s $T/tok.model ]] || fail "no tokenizer model written"
expect nonzero "already exists" -- "$QUEST" tokenizer train "$T/book.txt" -o "$T/tok.model" --vocab-size 300
expect 0 "train: 3[0-9] documents" -- "$QUEST" prepare "$T/book.txt" -o "$T/sp" --tokenizer "$T/tok.model" \
  --split-blank-lines 3 --val-documents 4 --shard-tokens 2000
[[ -f $T/sp/meta.json && -f $T/sp/train-000000.bin && -f $T/sp/val-000000.bin ]] || fail "missing output in $T/sp"
grep -q '"documents": 36' "$T/sp/meta.json" || fail "meta.json: expected 36 train documents"
grep -q '"tokenizer": "sentencepiece:' "$T/sp/meta.json" || fail "meta.json: tokenizer name"

# A rerun is refused and changes nothing; --overwrite replaces.
before=$(ls "$T/sp" | md5sum)
expect nonzero "--overwrite" -- "$QUEST" prepare "$T/book.txt" -o "$T/sp" --tokenizer "$T/tok.model"
[[ $(ls "$T/sp" | md5sum) == "$before" ]] || fail "a refused rerun changed the output"
expect 0 "prepared" -- "$QUEST" prepare "$T/docs.jsonl" -o "$T/sp" --tokenizer "$T/tok.model" --overwrite
[[ ! -f $T/sp/train-000001.bin ]] || fail "--overwrite left an old shard"

# Bad input: file and line named, non-zero exit, nothing left behind.
cp "$T/docs.jsonl" "$T/bad.jsonl"
echo '{"text": "unterminated' >>"$T/bad.jsonl"
expect 1 "bad.jsonl:41: invalid JSON" -- "$QUEST" prepare "$T/bad.jsonl" -o "$T/out-bad" --tokenizer "$T/tok.model"
no_files "$T/out-bad"
printf '{"title": "x"}\n' >"$T/nofield.jsonl"
expect 1 "nofield.jsonl:1: missing field \"text\"" -- "$QUEST" prepare "$T/nofield.jsonl" -o "$T/out-nf" --tokenizer "$T/tok.model"
printf 'fine\n\xff\xfe broken\n' >"$T/latin1.txt"
expect 1 "latin1.txt:2: invalid UTF-8" -- "$QUEST" prepare "$T/latin1.txt" -o "$T/out-u" --tokenizer "$T/tok.model"
if command -v zstd >/dev/null; then
  zstd -q -c "$T/docs.jsonl" | head -c 2000 >"$T/cut.jsonl.zst"
  expect 1 "truncated zstd data" -- "$QUEST" prepare "$T/cut.jsonl.zst" -o "$T/out-z" --tokenizer "$T/tok.model"
  no_files "$T/out-z"
fi
printf '\n\n' >"$T/empty.txt"
expect 1 "corpus is empty" -- "$QUEST" prepare "$T/empty.txt" -o "$T/out-e" --tokenizer "$T/tok.model"
no_files "$T/out-e"
expect 1 "does not exist" -- "$QUEST" prepare "$T/nope.txt" -o "$T/out-n" --tokenizer "$T/tok.model"
expect 1 "unknown tokenizer" -- "$QUEST" prepare "$T/book.txt" -o "$T/out-t" --tokenizer gpt3
expect nonzero "" -- "$QUEST" prepare "$T/book.txt" -o "$T/out-x" --val-fraction 0.1 --val-documents 3

# --skip-bad: the bad record is counted and reported, the rest prepared.
expect 0 "1 bad records were skipped" -- "$QUEST" prepare "$T/bad.jsonl" -o "$T/out-skip" --tokenizer "$T/tok.model" --skip-bad
grep -q '"skipped_bad": 1' "$T/out-skip/meta.json" || fail "meta.json: skipped_bad"

# GPT-2 (when the set-up's files are there): the same bytes with 1 and 2 threads.
if "$QUEST" prepare "$T/docs.jsonl" -o "$T/g1" --threads 1 >/dev/null 2>&1; then
  expect 0 "" -- "$QUEST" prepare "$T/docs.jsonl" -o "$T/g2" --threads 2
  for f in "$T"/g1/*; do cmp -s "$f" "$T/g2/$(basename "$f")" || fail "thread count changed $(basename "$f")"; done
  grep -q '"tokenizer": "gpt2"' "$T/g1/meta.json" || fail "meta.json: gpt2"
fi

# No temporary files anywhere.
leftovers=$(find "$T" -name '*.tmp.*')
[[ -z $leftovers ]] || fail "temporary files left: $leftovers"

if [[ $failures -gt 0 ]]; then
  echo "$failures check(s) failed"
  exit 1
fi
echo "all prepare CLI checks passed"
