#include "data/input_stream.h"

#include <zstd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <vector>

#include "core/error.h"

namespace quest {

namespace {

class FileStream : public InputStream {
 public:
  explicit FileStream(const std::string& path) : path_(path) {
    f_ = std::fopen(path.c_str(), "rb");
    QUEST_CHECK(f_, "cannot open '{}': {}", path, std::strerror(errno));
  }
  ~FileStream() override { std::fclose(f_); }

  size_t read(char* buf, size_t n) override {
    const size_t got = std::fread(buf, 1, n, f_);
    QUEST_CHECK(got > 0 || !std::ferror(f_), "cannot read '{}': {}", path_, std::strerror(errno));
    read_ += got;
    return got;
  }
  uint64_t file_bytes_read() const override { return read_; }
  const std::string& path() const override { return path_; }

 private:
  std::string path_;
  std::FILE* f_ = nullptr;
  uint64_t read_ = 0;
};

class ZstdStream : public InputStream {
 public:
  explicit ZstdStream(const std::string& path)
      : file_(path), in_buf_(ZSTD_DStreamInSize()), dctx_(ZSTD_createDCtx()) {
    QUEST_CHECK(dctx_, "cannot create a zstd decompression context");
  }
  ~ZstdStream() override { ZSTD_freeDCtx(dctx_); }

  size_t read(char* buf, size_t n) override {
    ZSTD_outBuffer out{buf, n, 0};
    while (out.pos == 0) {
      if (in_.pos == in_.size && !eof_) {
        in_.size = file_.read(in_buf_.data(), in_buf_.size());
        in_.src = in_buf_.data();
        in_.pos = 0;
        eof_ = in_.size == 0;
      }
      if (eof_ && !mid_frame_) return 0;
      // At the end of the file this still runs once, to flush output the context holds back.
      const size_t rc = ZSTD_decompressStream(dctx_, &out, &in_);
      QUEST_CHECK(!ZSTD_isError(rc), "'{}': corrupt zstd data near compressed byte {}: {}",
                  file_.path(), file_.file_bytes_read() - (in_.size - in_.pos),
                  ZSTD_getErrorName(rc));
      mid_frame_ = rc != 0;  // 0: a frame was completed and flushed
      // Nothing more comes out and the frame is unfinished: the file was cut short.
      QUEST_CHECK(!(eof_ && mid_frame_ && out.pos == 0),
                  "'{}': truncated zstd data: the file ends inside a compressed frame (after {} "
                  "compressed bytes)",
                  file_.path(), file_.file_bytes_read());
    }
    return out.pos;
  }
  uint64_t file_bytes_read() const override { return file_.file_bytes_read(); }
  const std::string& path() const override { return file_.path(); }

 private:
  FileStream file_;
  std::vector<char> in_buf_;
  ZSTD_inBuffer in_{nullptr, 0, 0};
  ZSTD_DCtx* dctx_;
  bool eof_ = false, mid_frame_ = false;
};

}  // namespace

bool is_zstd_path(const std::string& path) {
  return path.size() >= 4 && path.compare(path.size() - 4, 4, ".zst") == 0;
}

std::unique_ptr<InputStream> open_input_stream(const std::string& path) {
  if (is_zstd_path(path)) return std::make_unique<ZstdStream>(path);
  return std::make_unique<FileStream>(path);
}

}  // namespace quest
