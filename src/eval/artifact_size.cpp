#include "eval/artifact_size.h"

#include <zstd.h>

#include <fstream>
#include <memory>
#include <vector>

#include "core/error.h"

namespace quest {

ArtifactSize artifact_size(const std::string& path, int level, int threads) {
  QUEST_CHECK(level >= 1 && level <= ZSTD_maxCLevel(), "zstd level must be 1..{}, got {}", ZSTD_maxCLevel(), level);
  std::ifstream in(path, std::ios::binary);
  QUEST_CHECK(in, "cannot open '{}'", path);
  std::unique_ptr<ZSTD_CCtx, size_t (*)(ZSTD_CCtx*)> cctx(ZSTD_createCCtx(), ZSTD_freeCCtx);
  QUEST_CHECK(cctx, "zstd: cannot create a compression context");
  ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_compressionLevel, level);
  if (threads > 0) ZSTD_CCtx_setParameter(cctx.get(), ZSTD_c_nbWorkers, threads);  // ignored without MT support
  ArtifactSize s;
  s.level = level;
  std::vector<char> inbuf(ZSTD_CStreamInSize() * 16), outbuf(ZSTD_CStreamOutSize());
  bool last = false;
  while (!last) {
    in.read(inbuf.data(), std::streamsize(inbuf.size()));
    const size_t got = size_t(in.gcount());
    QUEST_CHECK(got > 0 || in.eof(), "cannot read '{}'", path);
    s.raw += got;
    last = got < inbuf.size();
    ZSTD_inBuffer input{inbuf.data(), got, 0};
    const ZSTD_EndDirective mode = last ? ZSTD_e_end : ZSTD_e_continue;
    while (true) {
      ZSTD_outBuffer output{outbuf.data(), outbuf.size(), 0};
      const size_t left = ZSTD_compressStream2(cctx.get(), &output, &input, mode);
      QUEST_CHECK(!ZSTD_isError(left), "zstd: {}", ZSTD_getErrorName(left));
      s.zstd += output.pos;
      if (last ? left == 0 : input.pos == input.size) break;
    }
  }
  return s;
}

}  // namespace quest
