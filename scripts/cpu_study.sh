#!/usr/bin/env bash
# The CPU study of issue 3: one small Llama trained on Moby Dick with the same data, seed, schedule
# and number of steps under fp32 (none), QuEST W4A4, LSQ W4A4, STE W4A4, QuEST W2A2 and QuEST W1A1.
# Collects each run's final validation loss and end-of-run masked fractions from its log.jsonl and
# writes docs/STUDY_CPU.md. Run by hand, from anywhere (about 20 minutes on 2 cores):
#   scripts/cpu_study.sh                         # build/quest, runs under runs/cpu_study
#   QUEST=build-quant/quest STEPS=200 scripts/cpu_study.sh
#   METHODS="ste2 ste1 lsq2" scripts/cpu_study.sh  # more runs; the table lists every run in OUT
#   METHODS= scripts/cpu_study.sh                  # rewrite the doc from the runs in OUT
# Needs python3 (the table) and the Moby Dick corpus of scripts/setup.sh.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
QUEST="${QUEST:-build/quest}"
[[ "$QUEST" = /* ]] || QUEST="$ROOT/$QUEST"
OUT="${OUT:-$ROOT/runs/cpu_study}"
DOC="${DOC:-$ROOT/docs/STUDY_CPU.md}"
CORPUS="${CORPUS:-${QUEST_CACHE:-$HOME/.cache/quest}/corpora/moby-dick.txt}"
VOCAB="${VOCAB:-1024}"
STEPS="${STEPS:-400}"
LR="${LR:-2e-3}"
SEED="${SEED:-0}"
METHODS="${METHODS-fp32 quest4 lsq4 ste4 quest2 quest1}"  # empty: only rewrite the doc
# On a shared machine libgomp's spinning barriers waste most of the time once the cores are
# oversubscribed; sleeping waits cost nothing measurable when they are not.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}"

# The model and schedule every method shares: d 128 (head 64, SwiGLU 512 -- every linear input is
# a multiple of 128 for the Hadamard transform), 4 layers, 128-token windows, 16 per step.
COMMON=(--n-layer 4 --d-model 128 --head-dim 64 --seq-len 128 --batch-size 16 --steps "$STEPS"
        --lr "$LR" --seed "$SEED" --eval-every 100 --log-every 50 --sample-tokens 0)

quant_args() {
  case "$1" in
    fp32)   echo "--quant none" ;;
    quest4) echo "--quant quest --bits 4" ;;
    lsq4)   echo "--quant lsq --bits 4" ;;
    ste4)   echo "--quant ste --bits 4" ;;
    quest2) echo "--quant quest --bits 2" ;;
    quest1) echo "--quant quest --bits 1" ;;
    lsq2)   echo "--quant lsq --bits 2" ;;
    ste2)   echo "--quant ste --bits 2" ;;
    ste1)   echo "--quant ste --bits 1" ;;
    *) echo "unknown method $1" >&2; exit 2 ;;
  esac
}

for m in $METHODS; do quant_args "$m" >/dev/null || exit 2; done
[[ -x "$QUEST" ]] || { echo "cpu_study: no quest binary at $QUEST (set QUEST=...)" >&2; exit 1; }
[[ -f "$CORPUS" ]] || { echo "cpu_study: no corpus at $CORPUS (run scripts/setup.sh)" >&2; exit 1; }
mkdir -p "$OUT"

# Moby Dick with a small SentencePiece vocabulary: GPT-2's 50k-entry lm_head would dominate a
# model this small on a CPU. Same document split as the default GPT-2 data (3 blank lines).
DATA="$OUT/data-sp$VOCAB"
if [[ ! -f "$DATA/meta.json" ]]; then
  "$QUEST" tokenizer train "$CORPUS" -o "$OUT/sp$VOCAB.model" --vocab-size "$VOCAB" --overwrite
  "$QUEST" prepare "$CORPUS" -o "$DATA" --tokenizer "$OUT/sp$VOCAB.model" --split-blank-lines 3 \
    --overwrite --no-progress
fi

for m in $METHODS; do
  read -r -a q <<<"$(quant_args "$m")"
  echo "=== $m: $QUEST train --data $DATA ${COMMON[*]} ${q[*]}"
  t0=$(date +%s)
  "$QUEST" train --data "$DATA" "${COMMON[@]}" "${q[@]}" --out "$OUT/$m" >"$OUT/$m.log" 2>&1 ||
    echo "cpu_study: $m failed (see $OUT/$m.log)" >&2
  echo $(( $(date +%s) - t0 )) >"$OUT/$m.seconds"
  tail -n 2 "$OUT/$m.log"
done

python3 - "$OUT" "$DOC" "$DATA" "${COMMON[*]}" "${QUEST#"$ROOT"/}" <<'EOF'
import json, os, sys, datetime
out, doc, data, common, quest = sys.argv[1:6]
# Every run found in OUT, in this order (the issue's six first within each width).
names = {"fp32": ("fp32 (none)", "32/32"), "quest4": ("QuEST", "W4A4"), "lsq4": ("LSQ", "W4A4"),
         "ste4": ("STE", "W4A4"), "quest2": ("QuEST", "W2A2"), "lsq2": ("LSQ", "W2A2"),
         "ste2": ("STE", "W2A2"), "quest1": ("QuEST", "W1A1"), "ste1": ("STE", "W1A1")}
flags = {"fp32": "--quant none", "quest4": "--quant quest --bits 4", "lsq4": "--quant lsq --bits 4",
         "ste4": "--quant ste --bits 4", "quest2": "--quant quest --bits 2",
         "lsq2": "--quant lsq --bits 2", "ste2": "--quant ste --bits 2",
         "quest1": "--quant quest --bits 1", "ste1": "--quant ste --bits 1"}
methods = " ".join(m for m in names if os.path.exists(os.path.join(out, m + ".seconds")))
total_s = sum(int(open(os.path.join(out, m + ".seconds")).read()) for m in methods.split())

def records(m):
    path = os.path.join(out, m, "log.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]

rows, fp32 = [], None
for m in methods.split():
    recs = records(m)
    evals = [r for r in recs if r["type"] == "eval"]
    masks = [r for r in recs if r["type"] == "masks"]
    train = [r for r in recs if r["type"] == "train"]
    val = evals[-1]["val_loss"] if evals else None
    if m == "fp32":
        fp32 = val
    secs = open(os.path.join(out, m + ".seconds")).read().strip()
    rows.append((m, val, evals, masks[-1] if masks else None, train[-1] if train else None, secs))

def fmt(x, f="{:.4f}"):
    return "—" if x is None else f.format(x)

lines = []
lines.append("| method | bits | final val loss | vs fp32 | weights masked | inputs masked | "
             "weight-mask persistence | curve (val loss at each evaluation) | wall |")
lines.append("|---|---|---|---|---|---|---|---|---|")
for m, val, evals, mk, tr, secs in rows:
    name, bits = names[m]
    diff = None if val is None or fp32 is None else val - fp32
    curve = " → ".join("{:.3f}".format(e["val_loss"]) for e in evals) or "—"
    wm = fmt(mk["mean_w_masked"] * 100, "{:.2f}%") if mk else "—"
    xm = fmt(mk["mean_x_masked"] * 100, "{:.2f}%") if mk else "—"
    pe = fmt(mk["mean_w_persistence"] * 100, "{:.1f}%") if mk and "mean_w_persistence" in mk else "—"
    lines.append(f"| {name} | {bits} | {fmt(val)} | {'—' if diff is None else '{:+.4f}'.format(diff)} "
                 f"| {wm} | {xm} | {pe} | {curve} | {secs} s |")

cpu = "unknown CPU"
try:
    with open("/proc/cpuinfo") as f:
        cpu = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
except Exception:
    pass
meta = json.load(open(os.path.join(data, "meta.json")))
cfg = json.load(open(os.path.join(out, rows[0][0], "config.json")))
model = cfg["model"]
table = "\n".join(lines)
text = f"""# CPU study: QuEST and its baselines on Moby Dick

Generated by `scripts/cpu_study.sh` (issue 3's last check) on {datetime.date.today().isoformat()}.

- **Machine:** {os.cpu_count()}-core VM ({cpu}), shared with other jobs, `OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', '')}`.
- **Wall time:** {int(total_s) // 60} min {int(total_s) % 60} s for the {len(methods.split())} runs (per run in the table).
- **Data:** Moby Dick, SentencePiece BPE with {meta['vocab_size']} pieces (`quest tokenizer train` +
  `quest prepare --split-blank-lines 3`): {meta['splits']['train']['tokens']} training and
  {meta['splits']['val']['tokens']} validation tokens.
- **Model:** {model['n_layer']} layers, d {model['d_model']}, head {model['head_dim']},
  SwiGLU {model['hidden']}, seq_len {model['seq_len']}; batch {cfg['batch_size']},
  {cfg['steps']} steps ({cfg['tokens_per_step'] * cfg['steps']} tokens),
  one-cycle schedule, peak lr {cfg['schedule']['lr']}, seed {cfg['seed']}, AdamW
  (weight decay {cfg['adamw']['weight_decay']}, grad clip {cfg['adamw']['grad_clip']}).
- **Script:** `QUEST={quest} scripts/cpu_study.sh` (the issue's six runs), then
  `QUEST={quest} METHODS="ste2 ste1 lsq2" scripts/cpu_study.sh` (STE and LSQ at the other
  widths; the table lists every run under the study's folder).
- **Command:** for each method, `quest train --data {os.path.relpath(data, os.path.dirname(os.path.dirname(doc)))} {common} --out RUN` plus
  its quantization flags:
{chr(10).join(f'  - {names[m][0]} {names[m][1]}: `{flags[m]}`' for m in methods.split())}

The final validation loss is over the whole validation split. Masked fractions are the means over
the 20 linear layers at the last step (weights: of the step's weights; inputs: of the last training
micro-batch); persistence is the share of weight entries masked at the previous evaluation that are
still masked. STE and fp32 mask nothing; for LSQ the "mask" is the clipped entries.

{table}
"""
# A hand-written "## Findings" section of an earlier run is kept (and should be re-read).
if os.path.exists(doc):
    old = open(doc).read()
    if "\n## Findings" in old:
        text += "\n## Findings" + old.split("\n## Findings", 1)[1]
with open(doc, "w") as f:
    f.write(text)
print(table)
EOF
echo "cpu_study: wrote $DOC"
