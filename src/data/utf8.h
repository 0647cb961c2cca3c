#pragma once
// Strict UTF-8 validation (no overlong forms, no surrogates, nothing above U+10FFFF): corpora are
// checked before tokenization so that a bad byte is reported where it is, not as odd tokens.
#include <cstddef>
#include <string>
#include <string_view>

namespace quest {

// Offset of the first byte that does not start a valid UTF-8 sequence, or npos when all is valid.
size_t find_invalid_utf8(std::string_view text);

// Appends the UTF-8 encoding of code point c (<= U+10FFFF) to out.
void append_utf8(std::string& out, char32_t c);

}  // namespace quest
