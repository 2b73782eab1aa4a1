#pragma once

#include <cstdint>

namespace orgd {

// Decodes the multi-byte UTF-8 sequence that starts at `p` (p < end, *p >= 0x80). Returns its
// length (2..4) and sets `cp`, or 0 when the bytes are not well-formed UTF-8: a bad lead or
// continuation byte, a truncated sequence, an overlong form, a surrogate, or past U+10FFFF.
inline int decode_utf8_sequence(const unsigned char* p, const unsigned char* end,
                                std::uint32_t& cp) {
  unsigned char c = *p;
  int extra;
  if ((c & 0xe0) == 0xc0) {
    extra = 1;
    cp = c & 0x1f;
  } else if ((c & 0xf0) == 0xe0) {
    extra = 2;
    cp = c & 0x0f;
  } else if ((c & 0xf8) == 0xf0) {
    extra = 3;
    cp = c & 0x07;
  } else {
    return 0;
  }
  if (end - p <= extra) return 0;
  for (int i = 1; i <= extra; ++i) {
    if ((p[i] & 0xc0) != 0x80) return 0;
    cp = (cp << 6) | (p[i] & 0x3f);
  }
  if ((extra == 1 && cp < 0x80) || (extra == 2 && cp < 0x800) || (extra == 3 && cp < 0x10000) ||
      (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff) {
    return 0;
  }
  return extra + 1;
}

}  // namespace orgd
