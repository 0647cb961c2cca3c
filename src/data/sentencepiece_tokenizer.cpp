#include "data/sentencepiece_tokenizer.h"

#include "core/error.h"
#include "core/file_io.h"
#include "data/sha256.h"

#ifdef QUEST_HAVE_SENTENCEPIECE
#include <sentencepiece_processor.h>
#endif

namespace quest {

#ifdef QUEST_HAVE_SENTENCEPIECE

struct SentencePieceTokenizer::Impl {
  sentencepiece::SentencePieceProcessor sp;
  int32_t eos = -1;
};

SentencePieceTokenizer::SentencePieceTokenizer() : impl_(std::make_unique<Impl>()) {}
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& path) {
  const auto bytes = read_file(path);
  return from_serialized(std::string(bytes.begin(), bytes.end()), path);
}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized(
    const std::string& proto, const std::string& origin) {
  std::unique_ptr<SentencePieceTokenizer> t(new SentencePieceTokenizer());
  const auto status = t->impl_->sp.LoadFromSerializedProto(proto);
  QUEST_CHECK(status.ok(), "'{}' is not a SentencePiece model: {}", origin, status.ToString());
  t->impl_->eos = t->impl_->sp.eos_id();
  QUEST_CHECK(t->impl_->eos >= 0,
              "SentencePiece model '{}' has no end-of-sentence piece to separate documents with",
              origin);
  t->name_ = "sentencepiece:" + sha256_hex(proto);
  t->origin_ = origin;
  return t;
}

std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view text) const {
  std::vector<int> ids;
  const auto status = impl_->sp.Encode(text, &ids);
  QUEST_CHECK(status.ok(), "SentencePiece ({}) cannot encode the text: {}", origin_,
              status.ToString());
  return std::vector<int32_t>(ids.begin(), ids.end());
}

std::string SentencePieceTokenizer::decode(std::span<const int32_t> tokens) const {
  const int n = impl_->sp.GetPieceSize();
  for (const int32_t t : tokens)
    QUEST_CHECK(t >= 0 && t < n, "token id {} is outside the SentencePiece vocabulary [0, {})", t,
                n);
  std::string text;
  const auto status = impl_->sp.Decode(std::vector<int>(tokens.begin(), tokens.end()), &text);
  QUEST_CHECK(status.ok(), "SentencePiece ({}) cannot decode: {}", origin_, status.ToString());
  return text;
}

int32_t SentencePieceTokenizer::vocab_size() const { return impl_->sp.GetPieceSize(); }
int32_t SentencePieceTokenizer::eot_token() const { return impl_->eos; }

#else  // no libsentencepiece

struct SentencePieceTokenizer::Impl {};
SentencePieceTokenizer::SentencePieceTokenizer() = default;
SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::load(const std::string& path) {
  fail("cannot load '{}': quest was built without libsentencepiece", path);
}
std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized(
    const std::string&, const std::string& origin) {
  fail("cannot load '{}': quest was built without libsentencepiece", origin);
}
std::vector<int32_t> SentencePieceTokenizer::encode(std::string_view) const { return {}; }
std::string SentencePieceTokenizer::decode(std::span<const int32_t>) const { return {}; }
int32_t SentencePieceTokenizer::vocab_size() const { return 0; }
int32_t SentencePieceTokenizer::eot_token() const { return -1; }

#endif

}  // namespace quest
