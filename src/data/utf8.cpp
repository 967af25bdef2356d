#include "data/utf8.h"

namespace ll {

namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// The valid range of the second byte after lead byte `b` (Unicode Table 3-7); the others are 80..BF.
void second_byte_range(unsigned char b, unsigned char* lo, unsigned char* hi) {
  *lo = 0x80, *hi = 0xBF;
  if (b == 0xE0) *lo = 0xA0;       // no overlong 3-byte forms
  else if (b == 0xED) *hi = 0x9F;  // no surrogates
  else if (b == 0xF0) *lo = 0x90;  // no overlong 4-byte forms
  else if (b == 0xF4) *hi = 0x8F;  // nothing above U+10FFFF
}

}  // namespace

size_t utf8_decode(std::string_view s, size_t pos, char32_t* cp) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data()) + pos;
  const size_t avail = s.size() - pos;
  const unsigned char b = p[0];
  const size_t n = utf8_lead_length(b);
  if (n == 0 || n > avail) return 0;
  if (n == 1) {
    *cp = b;
    return 1;
  }
  unsigned char lo, hi;
  second_byte_range(b, &lo, &hi);
  if (p[1] < lo || p[1] > hi) return 0;
  char32_t c = b & (0x7F >> n);
  for (size_t i = 1; i < n; ++i) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (p[i] & 0x3F);
  }
  *cp = c;
  return n;
}

bool is_valid_utf8(std::string_view s) {
  char32_t cp;
  for (size_t i = 0; i < s.size();) {
    if (static_cast<unsigned char>(s[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_decode(s, i, &cp);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void append_utf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(char(cp));
  } else if (cp < 0x800) {
    out->push_back(char(0xC0 | (cp >> 6)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(char(0xE0 | (cp >> 12)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(char(0xF0 | (cp >> 18)));
    out->push_back(char(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(char(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(char(0x80 | (cp & 0x3F)));
  }
}

size_t replace_invalid_utf8(std::string_view in, std::string* out) {
  out->clear();
  size_t replaced = 0, copied = 0;  // in[copied, i) is valid and not yet copied
  char32_t cp;
  for (size_t i = 0; i < in.size();) {
    if (static_cast<unsigned char>(in[i]) < 0x80) {
      ++i;
      continue;
    }
    const size_t n = utf8_decode(in, i, &cp);
    if (n > 0) {
      i += n;
      continue;
    }
    if (replaced == 0) out->reserve(in.size() + 16);
    out->append(in.data() + copied, i - copied);
    out->append(kReplacement);
    ++replaced;
    copied = ++i;
  }
  if (replaced == 0) {
    out->assign(in);
    return 0;
  }
  out->append(in.data() + copied, in.size() - copied);
  return replaced;
}

std::string utf8_lossy(std::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  char32_t cp;
  for (size_t i = 0; i < bytes.size();) {
    const size_t n = utf8_decode(bytes, i, &cp);
    if (n > 0) {
      out.append(bytes.data() + i, n);
      i += n;
      continue;
    }
    // A maximal subpart: the lead byte and the continuation bytes that could still start a valid sequence.
    const size_t want = utf8_lead_length(p[i]);
    size_t len = 1;
    if (want > 1) {
      unsigned char lo, hi;
      second_byte_range(p[i], &lo, &hi);
      if (i + 1 < bytes.size() && p[i + 1] >= lo && p[i + 1] <= hi) {
        len = 2;
        while (len < want && i + len < bytes.size() && (p[i + len] & 0xC0) == 0x80) ++len;
      }
    }
    out.append(kReplacement);
    i += len;
  }
  return out;
}

}  // namespace ll
