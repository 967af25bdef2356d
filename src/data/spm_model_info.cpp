#include "data/spm_model_info.h"

#include <cstdint>
#include <functional>
#include <string_view>

namespace ll {

namespace {

// Walks the fields of one protobuf message; false on malformed input.
// `on_field(number, wire_type, varint_value, bytes)`: bytes is set for length-delimited fields.
bool walk(std::string_view msg, const std::function<void(uint32_t, int, uint64_t, std::string_view)>& on_field) {
  size_t pos = 0;
  auto varint = [&](uint64_t* out) {
    uint64_t v = 0;
    for (int shift = 0; shift < 64 && pos < msg.size(); shift += 7) {
      const uint8_t b = uint8_t(msg[pos++]);
      v |= uint64_t(b & 0x7f) << shift;
      if (!(b & 0x80)) return *out = v, true;
    }
    return false;
  };
  while (pos < msg.size()) {
    uint64_t tag, value = 0;
    if (!varint(&tag)) return false;
    const int wire = int(tag & 7);
    std::string_view bytes;
    if (wire == 0) {
      if (!varint(&value)) return false;
    } else if (wire == 1 || wire == 5) {
      const size_t n = wire == 1 ? 8 : 4;
      if (msg.size() - pos < n) return false;
      pos += n;
    } else if (wire == 2) {
      uint64_t len;
      if (!varint(&len) || len > msg.size() - pos) return false;
      bytes = msg.substr(pos, size_t(len));
      pos += size_t(len);
    } else {
      return false;  // groups are not used by sentencepiece
    }
    on_field(uint32_t(tag >> 3), wire, value, bytes);
  }
  return true;
}

}  // namespace

std::optional<SpmModelInfo> read_spm_model_info(const std::string& model_bytes) {
  SpmModelInfo info;
  bool ok = true;
  ok &= walk(model_bytes, [&](uint32_t field, int wire, uint64_t, std::string_view bytes) {
    if (wire != 2) return;
    if (field == 2) {
      ok &= walk(bytes, [&](uint32_t f, int w, uint64_t v, std::string_view) {
        if (w != 0) return;
        if (f == 3) info.model_type = int(v);
        if (f == 24) info.treat_whitespace_as_suffix = v != 0;
      });
    } else if (field == 3) {
      ok &= walk(bytes, [&](uint32_t f, int w, uint64_t v, std::string_view b) {
        if (w == 2 && f == 1) info.normalizer_name = std::string(b);
        if (w == 2 && f == 2) info.has_charsmap = !b.empty();
        if (w == 0 && f == 3) info.add_dummy_prefix = v != 0;
        if (w == 0 && f == 4) info.remove_extra_whitespaces = v != 0;
        if (w == 0 && f == 5) info.escape_whitespaces = v != 0;
      });
    }
  });
  if (!ok) return std::nullopt;
  return info;
}

}  // namespace ll
