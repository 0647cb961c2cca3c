# Shared by the `mpirun` tests (sourced): a byte-level corpus, the tiny model's options, helpers.
# Usage in a test: source "$(dirname "$0")/mpi_common.sh" QUEST_BINARY SOURCE_DIR [MPIEXEC]
QUEST=${1:?quest binary}
MPIEXEC=${3:-mpirun}
T=$(mktemp -d "${TMPDIR:-/tmp}/quest-mpi-XXXXXX")
trap 'rm -rf "$T"' EXIT
# As root (CI containers) OpenMPI refuses to start without these; one thread per rank on 2 cores.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 OMP_WAIT_POLICY=passive
MPI=("$MPIEXEC" --oversubscribe --bind-to none)
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
finish() { [[ $failures -eq 0 ]] && echo "all passed"; exit $((failures > 0)); }

# Bytes of a text as tokens (vocabulary 256): Moby Dick from the set-up cache, or generated text.
python3 - "$T/data" <<'PY'
import json, os, random, struct, sys
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
path = os.path.join(os.environ.get("QUEST_CACHE") or os.path.expanduser("~/.cache/quest"), "corpora/moby-dick.txt")
if os.path.exists(path):
    text = open(path, "rb").read()[:200000]
else:
    random.seed(1)
    words = b"the whale sea ship captain white and of a to in his Ahab harpoon boat deck".split()
    text = b" ".join(random.choice(words) for _ in range(40000))
def shard(name, toks):
    hdr = [20240520, 1, len(toks)] + [0] * 253
    with open(os.path.join(out, name), "wb") as f:
        f.write(struct.pack("<256i", *hdr) + struct.pack(f"<{len(toks)}H", *toks))
split = len(text) * 9 // 10
shard("train-000000.bin", list(text[:split]))
shard("val-000000.bin", list(text[split:]))
json.dump({"vocab_size": 256}, open(os.path.join(out, "meta.json"), "w"))
PY
# The tiny model's options (each test adds --device, --eval-every, steps and batch).
TINY=(--data "$T/data" --n-layer 1 --d-model 32 --head-dim 16 --seq-len 32 --lr 3e-3 --log-every 1
      --eval-windows 8 --sample-tokens 0)

# same_losses A B [FIRST_STEP]: the train and eval losses of two runs' logs agree within fp32
# rounding, step by step (from FIRST_STEP on, in both).
same_losses() {
  python3 - "$1/log.jsonl" "$2/log.jsonl" "${3:-1}" <<'PY' || fail "loss curves differ: $1 vs $2"
import json, sys
def curve(path, first):
    out = {}
    for line in open(path):
        r = json.loads(line)
        if r["type"] in ("train", "eval") and r["step"] >= first:
            out[(r["type"], r["step"])] = r["loss"] if r["type"] == "train" else r["val_loss"]
    return out
a, b, first = curve(sys.argv[1], int(sys.argv[3])), curve(sys.argv[2], int(sys.argv[3])), 0
if not a or a.keys() != b.keys():
    sys.exit(f"different steps logged: {sorted(a)} vs {sorted(b)}")
bad = [(k, a[k], b[k]) for k in sorted(a) if abs(a[k] - b[k]) > 1e-5 * abs(b[k])]
for k, x, y in bad:
    print(f"  {k}: {x} vs {y}")
sys.exit(1 if bad else 0)
PY
}
