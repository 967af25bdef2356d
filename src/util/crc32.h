// CRC-32 as zip files (and zlib's crc32) define it: reflected polynomial 0xEDB88320, initial and final XOR 0xFFFFFFFF.
// Used by the zip writer behind PyTorch-format files (io/zip_writer.h).
#pragma once
#include <cstddef>
#include <cstdint>

namespace ll {

// Continues a running CRC: crc32_update(crc32_update(0, a), b) == CRC of a followed by b. Start from 0.
uint32_t crc32_update(uint32_t crc, const void* data, size_t size);

}  // namespace ll
