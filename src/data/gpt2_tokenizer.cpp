#include "data/gpt2_tokenizer.h"
#include "data/utf8.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <unordered_map>
#include <utility>

#include "core/error.h"
#include "core/file_io.h"
#include "data/unicode_tables.h"

namespace quest {
namespace {

constexpr uint64_t kNoKey = ~uint64_t{0};
constexpr size_t kMaxCachedWord = 255;  // longer words (rare) skip the cache

// ---- bytes <-> the printable code points GPT-2 writes them as ---------------------------------

// GPT-2's bytes_to_unicode(): printable Latin-1 bytes stand for themselves, the other 68 bytes
// for U+0100.. in byte order.
std::array<char32_t, 256> byte_to_code_point() {
  std::array<char32_t, 256> map{};
  char32_t next = 256;
  for (int b = 0; b < 256; ++b) {
    const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
    map[b] = printable ? static_cast<char32_t>(b) : next++;
  }
  return map;
}


// Decodes one UTF-8 sequence at s[i] (i < n). Returns its length, or 0 when the bytes there are
// not valid UTF-8 (truncated, overlong, surrogate, above U+10FFFF, stray continuation byte).
inline size_t decode_utf8(const unsigned char* s, size_t n, size_t i, char32_t& c) {
  const unsigned b0 = s[i];
  if (b0 < 0x80) {
    c = b0;
    return 1;
  }
  auto cont = [&](size_t k) { return i + k < n && (s[i + k] & 0xC0) == 0x80; };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!cont(1)) return 0;
    c = ((b0 & 0x1F) << 6) | (s[i + 1] & 0x3F);
    return 2;
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    if (!cont(1) || !cont(2)) return 0;
    c = ((b0 & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F);
    if (c < 0x800 || (c >= 0xD800 && c <= 0xDFFF)) return 0;
    return 3;
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    if (!cont(1) || !cont(2) || !cont(3)) return 0;
    c = ((b0 & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) |
        (s[i + 3] & 0x3F);
    if (c < 0x10000 || c > 0x10FFFF) return 0;
    return 4;
  }
  return 0;
}

// ---- pre-tokenizer ---------------------------------------------------------------------------

enum CharClass : uint8_t { kOther = 0, kLetter = 1, kNumber = 2, kSpace = 3 };

CharClass classify_slow(char32_t c) {
  if (is_unicode_letter(c)) return kLetter;
  if (is_unicode_number(c)) return kNumber;
  if (is_unicode_space(c)) return kSpace;
  return kOther;
}

// The Basic Multilingual Plane in a 64 KiB table, so most text needs no binary search.
const std::array<uint8_t, 0x10000>& bmp_classes() {
  static const auto table = [] {
    std::array<uint8_t, 0x10000> t{};
    for (char32_t c = 0; c < 0x10000; ++c) t[c] = classify_slow(c);
    return t;
  }();
  return table;
}

struct CharScanner {
  const unsigned char* s;
  size_t n;
  const uint8_t* bmp;

  // Class and byte length of the character at i (< n); an invalid byte is one "other" character.
  inline CharClass at(size_t i, size_t& len, char32_t& c) const {
    len = decode_utf8(s, n, i, c);
    if (len == 0) {
      len = 1;
      c = 0xFFFFFFFF;
      return kOther;
    }
    return c < 0x10000 ? static_cast<CharClass>(bmp[c]) : classify_slow(c);
  }
  // End of the run of characters of class cls starting at i.
  inline size_t run_end(size_t i, CharClass cls) const {
    size_t len;
    char32_t c;
    while (i < n && at(i, len, c) == cls) i += len;
    return i;
  }
};

// End (exclusive) of the pre-token starting at i < n; the alternatives are tried in the order of
// the pattern, as the regex engine does.
inline size_t next_pretoken(const CharScanner& sc, size_t i) {
  const unsigned char* s = sc.s;
  const size_t n = sc.n;
  if (s[i] == '\'' && i + 1 < n) {  // 's|'t|'re|'ve|'m|'ll|'d (case-sensitive)
    const unsigned char a = s[i + 1];
    if (a == 's' || a == 't' || a == 'm' || a == 'd') return i + 2;
    if (i + 2 < n) {
      const unsigned char b = s[i + 2];
      if ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')) return i + 3;
    }
  }
  size_t len;
  char32_t c;
  const CharClass cls = sc.at(i, len, c);
  if (c == U' ' && i + 1 < n) {  // " ?\p{L}+", " ?\p{N}+", " ?[^\s\p{L}\p{N}]+" with the space
    size_t len2;
    char32_t c2;
    const CharClass cls2 = sc.at(i + 1, len2, c2);
    if (cls2 != kSpace) return sc.run_end(i + 1 + len2, cls2);
  }
  if (cls != kSpace) return sc.run_end(i + len, cls);  // the same without the space
  // A whitespace run: "\s+(?!\S)" takes all of it at the end of the text, else all but its last
  // character (which then leads the next pre-token); a single one before non-space is "\s+".
  size_t last = i, j = i + len;
  while (j < n) {
    const CharClass k = sc.at(j, len, c);
    if (k != kSpace) break;
    last = j;
    j += len;
  }
  if (j == n || last == i) return j;
  return last;
}

// ---- per-thread cache of word -> tokens --------------------------------------------------------

inline uint64_t hash_bytes(const char* p, size_t n) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xD6E8FEB86659FD93ull);
  while (n >= 8) {
    uint64_t v;
    std::memcpy(&v, p, 8);
    h = (h ^ v) * 0xBF58476D1CE4E5B9ull;
    h ^= h >> 29;
    p += 8;
    n -= 8;
  }
  uint64_t v = 0;
  std::memcpy(&v, p, n);
  h = (h ^ v) * 0x94D049BB133111EBull;
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  return h ^ (h >> 32);
}

// Open addressing; keys and values live in two flat arenas (no allocation per word). When it is
// full it starts over, which keeps memory bounded for any input.
class WordCache {
 public:
  static constexpr size_t kMaxEntries = size_t{1} << 19;  // at most ~16 MiB of slots
  static constexpr size_t kMaxKeyBytes = size_t{16} << 20;

  WordCache() { slots_.resize(size_t{1} << 12); }

  // Tokens of word, or nullptr.
  const int32_t* find(std::string_view word, uint64_t h, uint32_t& count) const {
    const size_t mask = slots_.size() - 1;
    const auto tag = static_cast<uint32_t>(h >> 32);
    for (size_t k = h & mask;; k = (k + 1) & mask) {
      const Slot& sl = slots_[k];
      if (sl.key_len == 0) return nullptr;
      if (sl.tag == tag && sl.key_len == word.size() &&
          std::memcmp(keys_.data() + sl.key_off, word.data(), word.size()) == 0) {
        count = sl.val_len;
        return vals_.data() + sl.val_off;
      }
    }
  }

  void insert(std::string_view word, uint64_t h, const int32_t* ids, size_t count) {
    if (used_ >= kMaxEntries || keys_.size() >= kMaxKeyBytes) clear();
    if ((used_ + 1) * 2 > slots_.size()) grow();
    Slot sl;
    sl.tag = static_cast<uint32_t>(h >> 32);
    sl.key_off = static_cast<uint32_t>(keys_.size());
    sl.val_off = static_cast<uint32_t>(vals_.size());
    sl.key_len = static_cast<uint16_t>(word.size());
    sl.val_len = static_cast<uint16_t>(count);
    keys_.append(word);
    vals_.insert(vals_.end(), ids, ids + count);
    place(sl, h);
    ++used_;
  }

  void clear() {
    slots_.assign(size_t{1} << 12, Slot{});
    keys_.clear();
    vals_.clear();
    used_ = 0;
  }

 private:
  struct Slot {
    uint32_t tag = 0;  // high half of the hash
    uint32_t key_off = 0, val_off = 0;
    uint16_t key_len = 0;  // 0: empty (words are never empty)
    uint16_t val_len = 0;
  };

  void place(const Slot& sl, uint64_t h) {
    const size_t mask = slots_.size() - 1;
    size_t k = h & mask;
    while (slots_[k].key_len != 0) k = (k + 1) & mask;
    slots_[k] = sl;
  }

  void grow() {
    std::vector<Slot> old(slots_.size() * 2);
    old.swap(slots_);
    for (const Slot& sl : old) {
      if (sl.key_len != 0) place(sl, hash_bytes(keys_.data() + sl.key_off, sl.key_len));
    }
  }

  std::vector<Slot> slots_;
  std::string keys_;
  std::vector<int32_t> vals_;
  size_t used_ = 0;
};

// Each thread keeps caches for the last few tokenizers it used, keyed by instance id (never an
// address, which a later tokenizer could reuse).
WordCache& thread_cache(uint64_t instance_id) {
  thread_local std::vector<std::pair<uint64_t, std::unique_ptr<WordCache>>> caches;
  for (auto& [id, cache] : caches) {
    if (id == instance_id) return *cache;
  }
  if (caches.size() >= 4) caches.erase(caches.begin());
  caches.emplace_back(instance_id, std::make_unique<WordCache>());
  return *caches.back().second;
}

std::atomic<uint64_t> g_next_instance_id{1};

// Scratch space for bpe(), reused across calls of one thread.
struct BpeScratch {
  struct Candidate {
    uint32_t rank, pos;
    int32_t left, right;
    // std::*_heap build a max-heap: "less" means later (higher rank, then further right).
    bool operator<(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<int32_t> id;
  std::vector<uint32_t> next, prev;
  std::vector<Candidate> heap;
};

}  // namespace

// ---- loading -----------------------------------------------------------------------------------

std::string default_gpt2_dir() {
  if (const char* cache = std::getenv("QUEST_CACHE"); cache != nullptr && *cache != '\0') {
    return std::string(cache) + "/gpt2";
  }
  const char* home = std::getenv("HOME");
  return std::string(home != nullptr ? home : ".") + "/.cache/quest/gpt2";
}

Gpt2Tokenizer::~Gpt2Tokenizer() = default;

std::unique_ptr<Gpt2Tokenizer> Gpt2Tokenizer::load(const std::string& dir) {
  const std::string encoder_path = dir + "/encoder.json";
  const std::string merges_path = dir + "/vocab.bpe";
  QUEST_CHECK(file_exists(encoder_path),
              "GPT-2 tokenizer: '{}' not found (run scripts/setup.sh to fetch the GPT-2 files)",
              encoder_path);
  QUEST_CHECK(file_exists(merges_path),
              "GPT-2 tokenizer: '{}' not found (run scripts/setup.sh to fetch the GPT-2 files)",
              merges_path);

  std::unique_ptr<Gpt2Tokenizer> tok(new Gpt2Tokenizer());

  // Inverse of bytes_to_unicode, on code points.
  const auto b2c = byte_to_code_point();
  std::array<int, 324> code_point_byte;
  code_point_byte.fill(-1);
  for (int b = 0; b < 256; ++b) code_point_byte[b2c[b]] = b;

  // encoder.json: {"token as printable code points": id, ...}, ids 0..N-1 each once.
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(read_text_file(encoder_path));
  } catch (const nlohmann::json::exception& e) {
    fail("GPT-2 tokenizer: '{}' is not valid JSON: {}", encoder_path, e.what());
  }
  QUEST_CHECK(encoder.is_object() && !encoder.empty(),
              "GPT-2 tokenizer: '{}' must be a non-empty JSON object of token -> id", encoder_path);
  const size_t vocab = encoder.size();
  QUEST_CHECK(vocab < (size_t{1} << 30), "GPT-2 tokenizer: '{}' has too many tokens ({})",
              encoder_path, vocab);
  tok->token_bytes_.assign(vocab, std::string());
  std::vector<bool> seen(vocab, false);
  std::unordered_map<std::string, int32_t> id_of;  // printable form -> id, for vocab.bpe
  id_of.reserve(vocab * 2);
  for (const auto& [key, value] : encoder.items()) {
    QUEST_CHECK(value.is_number_integer() && value.get<int64_t>() >= 0 &&
                    value.get<int64_t>() < static_cast<int64_t>(vocab),
                "GPT-2 tokenizer: '{}': token '{}' has id {}, expected an integer in [0, {})",
                encoder_path, key, value.dump(), vocab);
    const auto id = static_cast<int32_t>(value.get<int64_t>());
    QUEST_CHECK(!seen[id], "GPT-2 tokenizer: '{}': id {} is used twice", encoder_path, id);
    seen[id] = true;
    QUEST_CHECK(!key.empty(), "GPT-2 tokenizer: '{}': empty token string", encoder_path);
    std::string bytes;
    const auto* s = reinterpret_cast<const unsigned char*>(key.data());
    for (size_t i = 0; i < key.size();) {
      char32_t c;
      const size_t len = decode_utf8(s, key.size(), i, c);
      QUEST_CHECK(len != 0 && c < code_point_byte.size() && code_point_byte[c] >= 0,
                  "GPT-2 tokenizer: '{}': token '{}' (id {}) is not in GPT-2's byte alphabet",
                  encoder_path, key, id);
      bytes += static_cast<char>(code_point_byte[c]);
      i += len;
    }
    tok->token_bytes_[id] = std::move(bytes);
    id_of.emplace(key, id);
  }
  for (int b = 0; b < 256; ++b) {
    std::string key;
    append_utf8(key, b2c[b]);
    const auto it = id_of.find(key);
    QUEST_CHECK(it != id_of.end(), "GPT-2 tokenizer: '{}' lacks the token for byte {}",
                encoder_path, b);
    tok->byte_token_[b] = it->second;
  }
  const auto eot = id_of.find("<|endoftext|>");
  QUEST_CHECK(eot != id_of.end(), "GPT-2 tokenizer: '{}' lacks <|endoftext|>", encoder_path);
  tok->eot_ = eot->second;

  // vocab.bpe: "#version" line, then one merge "left right" per line; the line number is the rank.
  const std::string text = read_text_file(merges_path);
  struct Pair {
    int32_t left, right, merged;
  };
  std::vector<Pair> merges;
  size_t line_no = 0;
  for (size_t pos = 0; pos < text.size();) {
    size_t end = text.find('\n', pos);
    if (end == std::string::npos) end = text.size();
    std::string_view line(text.data() + pos, end - pos);
    pos = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_no == 1 && line.starts_with("#version"))) continue;
    std::string_view parts[3];
    int count = 0;
    for (size_t i = 0; i < line.size();) {
      while (i < line.size() && (line[i] == ' ' || line[i] == '\t')) ++i;
      const size_t start = i;
      while (i < line.size() && line[i] != ' ' && line[i] != '\t') ++i;
      if (i > start && count < 3) parts[count++] = line.substr(start, i - start);
    }
    QUEST_CHECK(count == 2, "GPT-2 tokenizer: '{}' line {}: expected two tokens, got '{}'",
                merges_path, line_no, line);
    const auto left = id_of.find(std::string(parts[0]));
    const auto right = id_of.find(std::string(parts[1]));
    const auto merged = id_of.find(std::string(parts[0]) + std::string(parts[1]));
    QUEST_CHECK(left != id_of.end() && right != id_of.end() && merged != id_of.end(),
                "GPT-2 tokenizer: '{}' line {}: '{}' uses a token missing from encoder.json",
                merges_path, line_no, line);
    merges.push_back({left->second, right->second, merged->second});
  }
  QUEST_CHECK(!merges.empty(), "GPT-2 tokenizer: '{}' has no merges", merges_path);
  QUEST_CHECK(merges.size() < (size_t{1} << 31), "GPT-2 tokenizer: '{}' has too many merges",
              merges_path);

  // encode() applies merges through a priority queue, which equals GPT-2's "merge the lowest-rank
  // pair everywhere, repeat" only if no merge uses a token that a later merge creates. True for
  // GPT-2's file; checked so that a different file fails loudly instead of encoding differently.
  std::vector<uint32_t> created(vocab, std::numeric_limits<uint32_t>::max());
  for (size_t r = merges.size(); r-- > 0;) created[merges[r].merged] = static_cast<uint32_t>(r);
  for (size_t r = 0; r < merges.size(); ++r) {
    for (const int32_t part : {merges[r].left, merges[r].right}) {
      QUEST_CHECK(created[part] == std::numeric_limits<uint32_t>::max() || created[part] < r,
                  "GPT-2 tokenizer: '{}': merge {} uses token '{}', which only a later merge "
                  "creates (unsupported merge order)",
                  merges_path, r + 1, tok->token_bytes_[part]);
    }
  }

  size_t capacity = 16;
  while (capacity < merges.size() * 2) capacity *= 2;
  tok->merge_keys_.assign(capacity, kNoKey);
  tok->merge_vals_.assign(capacity, Merge{});
  tok->merge_mask_ = capacity - 1;
  for (size_t r = 0; r < merges.size(); ++r) {
    const uint64_t key = (static_cast<uint64_t>(merges[r].left) << 32) |
                         static_cast<uint32_t>(merges[r].right);
    size_t k = (key * 0x9E3779B97F4A7C15ull >> 32) & tok->merge_mask_;
    while (tok->merge_keys_[k] != kNoKey) {
      QUEST_CHECK(tok->merge_keys_[k] != key, "GPT-2 tokenizer: '{}': merge {} repeats '{} {}'",
                  merges_path, r + 1, tok->token_bytes_[merges[r].left],
                  tok->token_bytes_[merges[r].right]);
      k = (k + 1) & tok->merge_mask_;
    }
    tok->merge_keys_[k] = key;
    tok->merge_vals_[k] = Merge{static_cast<uint32_t>(r), merges[r].merged};
  }
  tok->instance_id_ = g_next_instance_id.fetch_add(1);
  return tok;
}

// ---- encode / decode ---------------------------------------------------------------------------

inline const Gpt2Tokenizer::Merge* Gpt2Tokenizer::find_merge(int32_t left, int32_t right) const {
  const uint64_t key = (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right);
  for (size_t k = (key * 0x9E3779B97F4A7C15ull >> 32) & merge_mask_;; k = (k + 1) & merge_mask_) {
    if (merge_keys_[k] == key) return &merge_vals_[k];
    if (merge_keys_[k] == kNoKey) return nullptr;
  }
}

// Byte-level BPE of one pre-token: starting from one token per byte, repeatedly merge the pair of
// lowest rank, leftmost first. A heap of candidate pairs keeps long words O(n log n); stale
// entries (a side merged since) are skipped when popped.
void Gpt2Tokenizer::bpe(std::string_view word, std::vector<int32_t>& out) const {
  const size_t n = word.size();
  if (n == 1) {
    out.push_back(byte_token_[static_cast<unsigned char>(word[0])]);
    return;
  }
  thread_local BpeScratch scratch;
  auto& id = scratch.id;
  auto& next = scratch.next;
  auto& prev = scratch.prev;
  auto& heap = scratch.heap;
  id.resize(n);
  next.resize(n);
  prev.resize(n);
  heap.clear();
  const auto end = static_cast<uint32_t>(n);  // "no neighbour"
  for (size_t i = 0; i < n; ++i) {
    id[i] = byte_token_[static_cast<unsigned char>(word[i])];
    next[i] = static_cast<uint32_t>(i + 1);
    prev[i] = i == 0 ? end : static_cast<uint32_t>(i - 1);
  }
  auto push = [&](uint32_t pos) {
    if (pos == end || next[pos] == end) return;
    if (const Merge* m = find_merge(id[pos], id[next[pos]])) {
      heap.push_back({m->rank, pos, id[pos], id[next[pos]]});
      std::push_heap(heap.begin(), heap.end());
    }
  };
  for (uint32_t i = 0; i + 1 < n; ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end());
    const BpeScratch::Candidate c = heap.back();
    heap.pop_back();
    const uint32_t right = next[c.pos];
    // Valid only if both sides are still the tokens it was made from (ids never return to an
    // earlier value, and a dead symbol's id is set to -1).
    if (id[c.pos] != c.left || right == end || id[right] != c.right) continue;
    id[c.pos] = find_merge(c.left, c.right)->merged;
    id[right] = -1;
    next[c.pos] = next[right];
    if (next[right] != end) prev[next[right]] = c.pos;
    push(prev[c.pos]);
    push(c.pos);
  }
  for (uint32_t i = 0; i != end; i = next[i]) out.push_back(id[i]);
}

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  WordCache& cache = thread_cache(instance_id_);
  const CharScanner sc{reinterpret_cast<const unsigned char*>(text.data()), text.size(),
                       bmp_classes().data()};
  for (size_t i = 0; i < text.size();) {
    const size_t j = next_pretoken(sc, i);
    const std::string_view word = text.substr(i, j - i);
    i = j;
    if (word.size() == 1) {
      out.push_back(byte_token_[static_cast<unsigned char>(word[0])]);
      continue;
    }
    if (word.size() > kMaxCachedWord) {
      bpe(word, out);
      continue;
    }
    const uint64_t h = hash_bytes(word.data(), word.size());
    uint32_t count;
    if (const int32_t* ids = cache.find(word, h, count)) {
      out.insert(out.end(), ids, ids + count);
      continue;
    }
    const size_t start = out.size();
    bpe(word, out);
    cache.insert(word, h, out.data() + start, out.size() - start);
  }
}

std::vector<int32_t> Gpt2Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  out.reserve(text.size() / 3 + 16);
  encode_append(text, out);
  return out;
}

const std::string& Gpt2Tokenizer::token_bytes(int32_t id) const {
  QUEST_CHECK(id >= 0 && id < vocab_size(), "GPT-2 tokenizer: token id {} is outside [0, {})", id,
              vocab_size());
  return token_bytes_[id];
}

std::string Gpt2Tokenizer::decode(std::span<const int32_t> tokens) const {
  std::string out;
  size_t bytes = 0;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    QUEST_CHECK(id >= 0 && id < vocab_size(),
                "GPT-2 tokenizer: cannot decode token id {} (position {}): outside [0, {})", id, i,
                vocab_size());
    bytes += token_bytes_[id].size();
  }
  out.reserve(bytes);
  for (const int32_t id : tokens) out += token_bytes_[id];
  return out;
}

}  // namespace quest
