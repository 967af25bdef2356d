// bitsandbytes 4-bit formats (core/dtype.h, core/quantize.h): bit-identical quantization against
// tests/fixtures/quant_4bit.txt (scripts/make_quant_fixtures.py: the published CUDA rule, checked there against
// bitsandbytes' own CPU path), layouts, dequantization.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "core/quantize.h"
#include "test_util.h"

namespace ll {
namespace {

std::vector<float> floats_from_hex(std::istringstream& in) {
  std::vector<float> out;
  std::string word;
  while (in >> word) {
    const uint32_t bits = uint32_t(std::stoul(word, nullptr, 16));
    float f;
    std::memcpy(&f, &bits, 4);
    out.push_back(f);
  }
  return out;
}

std::vector<uint8_t> bytes_from_hex(std::istringstream& in) {
  std::string s;
  in >> s;
  std::vector<uint8_t> out(s.size() / 2);
  for (size_t i = 0; i < out.size(); ++i) out[i] = uint8_t(std::stoul(s.substr(2 * i, 2), nullptr, 16));
  return out;
}

// scripts/make_quant_fixtures.py's lcg_values.
std::vector<float> lcg_values(int64_t n, uint32_t seed) {
  std::vector<float> out(static_cast<size_t>(n));
  uint32_t s = seed;
  for (int64_t i = 0; i < n; ++i) {
    s = 1664525u * s + 1013904223u;
    const float u = float(double(s >> 8) / 16777216.0) * 2.0f - 1.0f;
    out[size_t(i)] = u * std::ldexp(1.0f, int((i / 64) % 7) - 3);
  }
  return out;
}

std::string fnv1a(const uint8_t* p, size_t n) {
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ p[i]) * 0x100000001b3ull;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(h));
  return buf;
}

std::vector<uint32_t> bits_of(const float* p, size_t n) {
  std::vector<uint32_t> out(n);
  std::memcpy(out.data(), p, 4 * n);
  return out;
}

struct FixtureCase {
  std::string name, quant_type;
  bool double_quant = false;
  int64_t n = 0;
  std::vector<float> input;
  std::string codes_hash;
  std::vector<uint8_t> codes, absmax_codes;
  std::vector<float> absmax, nested, offset;
};

struct Fixture {
  std::vector<float> dynamic_map;
  std::vector<FixtureCase> cases;
};

Fixture read_fixture() {
  const std::string path = test::fixtures_dir() + "/quant_4bit.txt";
  std::ifstream file(path);
  LL_CHECK(file.good(), path, ": cannot open (run the tests from the repository root)");
  Fixture f;
  std::string line;
  while (std::getline(file, line)) {
    std::istringstream in(line);
    std::string key;
    in >> key;
    if (key.empty() || key[0] == '#') continue;
    if (key == "dynamic_map") {
      f.dynamic_map = floats_from_hex(in);
      continue;
    }
    if (key == "case") {
      FixtureCase c;
      int dq = 0;
      in >> c.name >> c.quant_type >> dq >> c.n;
      c.double_quant = dq != 0;
      f.cases.push_back(c);
      continue;
    }
    LL_CHECK(!f.cases.empty(), path, ": `", key, "` before the first case");
    FixtureCase& c = f.cases.back();
    if (key == "input") c.input = floats_from_hex(in);
    else if (key == "lcg") {
      uint32_t seed = 0;
      in >> seed;
      c.input = lcg_values(c.n, seed);
    } else if (key == "codes") c.codes = bytes_from_hex(in);
    else if (key == "codes_fnv1a") in >> c.codes_hash;
    else if (key == "absmax" && c.double_quant) c.absmax_codes = bytes_from_hex(in);
    else if (key == "absmax") c.absmax = floats_from_hex(in);
    else if (key == "nested") c.nested = floats_from_hex(in);
    else if (key == "offset") c.offset = floats_from_hex(in);
    else fail(path, ": unknown key `", key, "`");
  }
  return f;
}

TEST(QuantFormat, DynamicMapMatchesBitsandbytes) {
  const Fixture f = read_fixture();
  ASSERT_EQ(f.dynamic_map.size(), 256u);
  EXPECT_EQ(bits_of(f.dynamic_map.data(), 256), bits_of(dynamic_map_values(), 256));
}

TEST(QuantFormat, QuantizationIsBitIdenticalToTheFixture) {
  const Fixture f = read_fixture();
  ASSERT_EQ(f.cases.size(), 8u);
  for (const FixtureCase& c : f.cases) {
    SCOPED_TRACE(c.name + " " + c.quant_type + (c.double_quant ? " double-quantized" : ""));
    ASSERT_EQ(int64_t(c.input.size()), c.n);
    const DType format = quant_format(c.quant_type, c.double_quant, "fixture");
    const QuantLayout l = quant_layout(format, c.n);
    std::vector<uint8_t> q(storage_bytes(format, c.n), 0xAB);
    quantize_4bit(format, c.input.data(), c.n, q.data());
    const size_t code_bytes = size_t((c.n + 1) / 2);
    if (c.codes_hash.empty())
      EXPECT_EQ(std::vector<uint8_t>(q.begin(), q.begin() + code_bytes), c.codes);
    else
      EXPECT_EQ(fnv1a(q.data(), code_bytes), c.codes_hash);
    if (!c.double_quant) {
      ASSERT_EQ(int64_t(c.absmax.size()), l.blocks);
      EXPECT_EQ(bits_of(reinterpret_cast<const float*>(q.data() + l.absmax), size_t(l.blocks)),
                bits_of(c.absmax.data(), c.absmax.size()));
      continue;
    }
    EXPECT_EQ(std::vector<uint8_t>(q.begin() + l.absmax, q.begin() + l.absmax + l.blocks), c.absmax_codes);
    ASSERT_EQ(int64_t(c.nested.size()), l.nested_blocks);
    EXPECT_EQ(bits_of(reinterpret_cast<const float*>(q.data() + l.nested), size_t(l.nested_blocks)),
              bits_of(c.nested.data(), c.nested.size()));
    ASSERT_EQ(c.offset.size(), 1u);
    EXPECT_EQ(bits_of(reinterpret_cast<const float*>(q.data() + l.offset), 1), bits_of(c.offset.data(), 1));
  }
}

TEST(QuantFormat, LayoutSizesCountFourBitsAndTheStatistics) {
  // 1000 elements: 500 code bytes, 16 blocks; sections on 16-byte boundaries.
  const QuantLayout plain = quant_layout(DType::NF4, 1000);
  EXPECT_EQ(plain.blocks, 16);
  EXPECT_EQ(plain.absmax, 512u);
  EXPECT_EQ(plain.bytes, 576u);
  const QuantLayout dq = quant_layout(DType::NF4DQ, 1000);
  EXPECT_EQ(dq.nested, 528u);
  EXPECT_EQ(dq.offset, 532u);
  EXPECT_EQ(dq.bytes, 544u);
  EXPECT_EQ(storage_bytes(DType::NF4DQ, 1000), 544u);
  EXPECT_EQ(storage_bytes(DType::BF16, 1000), 2000u);
  // A 4096×4096 weight: 4 bits + 32/64 bits of f32 absmax per element, or ~8/64 + a little with double quantization.
  EXPECT_EQ(storage_bytes(DType::NF4, 4096 * 4096), size_t(4096) * 4096 / 2 + size_t(4096) * 4096 / 64 * 4);
  EXPECT_LT(storage_bytes(DType::NF4DQ, 4096 * 4096), size_t(4096) * 4096 / 2 + size_t(4096) * 4096 / 64 * 2);
}

TEST(QuantFormat, DequantizationIsCodeTimesBlockAbsmax) {
  for (DType format : {DType::NF4, DType::NF4DQ, DType::FP4, DType::FP4DQ}) {
    SCOPED_TRACE(dtype_name(format));
    const int64_t n = 64 * 5 + 7;
    const std::vector<float> w = lcg_values(n, 7);
    std::vector<uint8_t> q(storage_bytes(format, n));
    quantize_4bit(format, w.data(), n, q.data());
    std::vector<float> all(static_cast<size_t>(n)), part(50);
    dequantize_4bit(format, q.data(), n, 0, n, all.data());
    dequantize_4bit(format, q.data(), n, 100, 50, part.data());
    for (int64_t i = 0; i < 50; ++i) EXPECT_EQ(part[size_t(i)], all[size_t(100 + i)]);
    for (int64_t i = 0; i < n; ++i) {
      const float a = quant_block_absmax(format, q.data(), n, i / 64);
      const uint8_t byte = q[size_t(i / 2)];
      EXPECT_EQ(all[size_t(i)], quant_code_values(format)[i % 2 == 0 ? byte >> 4 : byte & 15] * a);
      // The error of 4-bit codes: at most half the widest gap of the code book (NF4 ~0.14, FP4 ~0.17) of the block's
      // true absmax, plus the error of the stored absmax itself (double quantization).
      float truth = 0;
      for (int64_t j = i / 64 * 64; j < std::min(n, i / 64 * 64 + 64); ++j)
        truth = std::max(truth, std::fabs(w[size_t(j)]));
      EXPECT_NEAR(all[size_t(i)], w[size_t(i)], 0.17f * truth + std::fabs(a - truth) + 1e-6f);
    }
  }
}

TEST(QuantFormat, UnknownQuantTypeNamesTheFlag) {
  try {
    quant_format("int4", true, "--bnb_4bit_quant_type");
    FAIL() << "no error";
  } catch (const std::exception& e) {
    EXPECT_NE(std::string(e.what()).find("--bnb_4bit_quant_type"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("nf4 or fp4"), std::string::npos) << e.what();
  }
  EXPECT_EQ(quant_format("nf4", true, "x"), DType::NF4DQ);
  EXPECT_EQ(quant_format("fp4", false, "x"), DType::FP4);
}

}  // namespace
}  // namespace ll
