// PyTorch-format files written without PyTorch (io/torch_file.h): the CRC, the zip container (classic and zip64),
// the pickle opcodes, the state-dict layout, what is refused, and the recorded check that torch.load reads our files
// (scripts/check_torch_file.py; its docstring says how to rerun it).
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <set>

#include "hf_test_util.h"
#include "io/pickle_writer.h"
#include "io/safetensors.h"
#include "io/torch_file.h"
#include "io/zip_writer.h"
#include "core/tensor_host.h"
#include "util/crc32.h"
#include "util/files.h"
#include "util/random.h"
#include "util/sha256.h"
#include "zip_test_util.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;
using namespace std::string_literals;

using test::error_of;

TEST(Crc32, KnownVectorsAndRunningUpdates) {
  EXPECT_EQ(crc32_update(0, "", 0), 0u);
  EXPECT_EQ(crc32_update(0, "123456789", 9), 0xCBF43926u);  // the CRC-32 check value
  const std::string fox = "The quick brown fox jumps over the lazy dog";
  EXPECT_EQ(crc32_update(0, fox.data(), fox.size()), 0x414FA339u);
  for (size_t split = 0; split <= fox.size(); ++split)  // every split point: the 8-byte steps and the byte tail agree
    EXPECT_EQ(crc32_update(crc32_update(0, fox.data(), split), fox.data() + split, fox.size() - split), 0x414FA339u);
}

// ---- zip --------------------------------------------------------------------------------------------------------

std::string random_bytes(size_t n, uint64_t seed) {
  Rng rng(seed);
  std::string s(n, '\0');
  for (char& c : s) c = char(rng.below(256));
  return s;
}

std::string write_zip(const std::string& path, const std::vector<std::pair<std::string, std::string>>& entries,
                      ZipWriterOptions options = {}) {
  AtomicFileWriter out(path);
  ZipWriter zip(out, options);
  for (const auto& [name, data] : entries) zip.add(name, data.data(), data.size());
  zip.finish();
  out.commit();
  return read_text_file(path);
}

const std::vector<std::pair<std::string, std::string>> kEntries = {
    {"a/data.pkl", random_bytes(100, 1)}, {"a/empty", ""}, {"a/data/0", random_bytes(4097, 2)},
    {"a/data/1", random_bytes(1, 3)},     {"a/version", "3\n"}};

TEST(ZipWriter, StoredAlignedEntriesAndDirectory) {
  test::TempDir dir;
  const std::string bytes = write_zip(dir / "x.zip", kEntries);
  const test::ZipArchive z = test::parse_zip(bytes);
  EXPECT_FALSE(z.zip64_end);
  ASSERT_EQ(z.entries.size(), kEntries.size());
  for (size_t i = 0; i < kEntries.size(); ++i) {
    const test::ZipEntry& e = z.entries[i];
    EXPECT_EQ(e.name, kEntries[i].first);
    EXPECT_EQ(e.data, kEntries[i].second) << e.name;
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name << " starts at " << e.data_offset;
    EXPECT_FALSE(e.zip64_sizes || e.zip64_offset) << e.name;
  }
  EXPECT_EQ(z.entries[0].header_offset, 0u);
  // Deterministic: the same entries give the same bytes (no clock in the headers).
  EXPECT_EQ(write_zip(dir / "y.zip", kEntries), bytes);
  // Another alignment is honoured too.
  ZipWriterOptions o;
  o.alignment = 4096;
  for (const test::ZipEntry& e : test::parse_zip(write_zip(dir / "z.zip", kEntries, o)).entries)
    EXPECT_EQ(e.data_offset % 4096, 0u) << e.name;
}

TEST(ZipWriter, Zip64RecordsWhenForced) {
  // The records a > 4 GiB archive needs, checked on a small one: 0xFFFFFFFF in every 32-bit size/offset field and
  // the real values in zip64 extra fields, the zip64 end record and its locator.
  test::TempDir dir;
  ZipWriterOptions o;
  o.force_zip64 = true;
  const test::ZipArchive z = test::parse_zip(write_zip(dir / "x.zip", kEntries, o));
  EXPECT_TRUE(z.zip64_end);
  ASSERT_EQ(z.entries.size(), kEntries.size());
  for (size_t i = 0; i < kEntries.size(); ++i) {
    const test::ZipEntry& e = z.entries[i];
    EXPECT_TRUE(e.zip64_sizes && e.zip64_offset) << e.name;
    EXPECT_EQ(e.data, kEntries[i].second) << e.name;
    EXPECT_EQ(e.data_offset % 64, 0u) << e.name;
  }
}

TEST(ZipWriter, RefusesBadNamesAndMisuse) {
  test::TempDir dir;
  const std::string path = dir / "x.zip";
  {
    AtomicFileWriter out(path);
    ZipWriter zip(out);
    zip.add("a/b", "x", 1);
    EXPECT_NE(error_of([&] { zip.add("a/b", "y", 1); }).find("`a/b` written twice"), std::string::npos);
    EXPECT_NE(error_of([&] { zip.add("", "y", 1); }).find("invalid entry name"), std::string::npos);
    EXPECT_NE(error_of([&] { zip.add("/abs", "y", 1); }).find("invalid entry name"), std::string::npos);
    EXPECT_NE(error_of([&] { zip.add("a/../b", "y", 1); }).find("invalid entry name"), std::string::npos);
    EXPECT_NE(error_of([&] { zip.add("a/c", nullptr, 4); }).find("no data"), std::string::npos);
    zip.finish();
    EXPECT_NE(error_of([&] { zip.add("a/d", "y", 1); }).find("after finish"), std::string::npos);
    // Not committed: the destructor removes the temporary file and `path` never appears.
  }
  EXPECT_FALSE(path_exists(path));
  EXPECT_TRUE(fs::is_empty(dir.path()));
  AtomicFileWriter out(path);
  ZipWriterOptions o;
  o.alignment = 48;
  EXPECT_NE(error_of([&] { ZipWriter z(out, o); }).find("power of two"), std::string::npos);
}

// ---- pickle -----------------------------------------------------------------------------------------------------

std::string pickled(const std::function<void(PickleWriter&)>& body) {
  PickleWriter p;
  body(p);
  return p.finish();
}

TEST(PickleWriter, OpcodesAndIntegerEncodings) {
  EXPECT_EQ(pickled([](PickleWriter&) {}), std::string("\x80\x02."));
  auto int_bytes = [](int64_t v) {
    const std::string all = pickled([v](PickleWriter& p) { p.integer(v); });
    return all.substr(2, all.size() - 3);  // without PROTO 2 and STOP
  };
  // What Python's pickle (protocol 2) writes for each: BININT1, BININT2, BININT, LONG1 (pickle.encode_long).
  EXPECT_EQ(int_bytes(0), std::string("K\x00", 2));
  EXPECT_EQ(int_bytes(255), std::string("K\xff"));
  EXPECT_EQ(int_bytes(256), std::string("M\x00\x01", 3));
  EXPECT_EQ(int_bytes(65536), std::string("J\x00\x00\x01\x00", 5));
  EXPECT_EQ(int_bytes(-1), std::string("J\xff\xff\xff\xff"));
  EXPECT_EQ(int_bytes(INT32_MIN), std::string("J\x00\x00\x00\x80", 5));
  EXPECT_EQ(int_bytes(int64_t(1) << 31), std::string("\x8a\x05\x00\x00\x00\x80\x00", 7));
  EXPECT_EQ(int_bytes(-(int64_t(1) << 31) - 1), std::string("\x8a\x05\xff\xff\xff\x7f\xff", 7));
  EXPECT_EQ(int_bytes(int64_t(1) << 40), std::string("\x8a\x06\x00\x00\x00\x00\x00\x01", 8));
  EXPECT_EQ(int_bytes(INT64_MAX), std::string("\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f", 10));
  EXPECT_EQ(int_bytes(INT64_MIN), std::string("\x8a\x08\x00\x00\x00\x00\x00\x00\x00\x80", 10));

  EXPECT_EQ(pickled([](PickleWriter& p) {
              p.empty_dict();
              p.mark();
              p.string("ab");
              p.global("collections", "OrderedDict");
              p.empty_tuple();
              p.reduce();
              p.set_items();
              p.boolean(true);
              p.boolean(false);
              p.mark();
              p.tuple();
              p.persistent_id();
            }),
            "\x80\x02}(X\x02\x00\x00\x00"s "ab" "ccollections\nOrderedDict\n)Ru\x88\x89(tQ.");
  EXPECT_NE(error_of([] { PickleWriter p; p.global("a\nb", "c"); }).find("newline"), std::string::npos);
}

// ---- the state-dict file ------------------------------------------------------------------------------------------

struct Sample {  // tensors with their bytes, as the samples' writer and the layout test use them
  std::vector<std::vector<unsigned char>> buffers;
  std::vector<SafetensorsWriteItem> items;
  void add(const std::string& name, DType dtype, std::vector<int64_t> shape, uint64_t seed) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    std::vector<double> v(static_cast<size_t>(n));
    Rng rng(seed);
    for (double& x : v) x = rng.uniform(-3, 3);
    buffers.emplace_back(size_t(n) * dtype_size(dtype));
    if (dtype == DType::I32) {
      std::vector<int32_t> ints(v.begin(), v.end());
      for (size_t i = 0; i < ints.size(); ++i) ints[i] = int32_t(v[i] * 1000);
      std::memcpy(buffers.back().data(), ints.data(), buffers.back().size());
    } else {
      convert_values(v.data(), DType::F64, buffers.back().data(), dtype, size_t(n));
    }
    items.push_back({name, dtype, shape, n ? buffers.back().data() : nullptr});
  }
};

Sample mixed_sample() {
  Sample s;
  s.add("model.embed_tokens.weight", DType::F32, {7, 5}, 1);
  s.add("model.layers.0.input_layernorm.weight", DType::BF16, {5}, 2);
  s.add("model.norm.weight", DType::F16, {5}, 3);
  s.add("lm_head.weight", DType::F64, {3, 2, 2}, 4);
  s.add("counts", DType::I32, {6}, 5);
  s.add("empty", DType::F32, {0, 4}, 6);
  s.add("scalar", DType::F32, {}, 7);
  return s;
}

TEST(TorchFile, LayoutOfAStateDict) {
  test::TempDir dir;
  const Sample s = mixed_sample();
  write_torch_state_dict(dir / "trainable_params.bin", s.items);
  const test::ZipArchive z = test::read_zip_file(dir / "trainable_params.bin");
  std::vector<std::string> names;
  for (const test::ZipEntry& e : z.entries) names.push_back(e.name);
  std::vector<std::string> expected = {"trainable_params/data.pkl", "trainable_params/byteorder"};
  for (size_t i = 0; i < s.items.size(); ++i) expected.push_back("trainable_params/data/" + std::to_string(i));
  expected.push_back("trainable_params/version");
  EXPECT_EQ(names, expected);
  EXPECT_EQ(z.find("trainable_params/byteorder")->data, "little");
  EXPECT_EQ(z.find("trainable_params/version")->data, "3\n");
  for (size_t i = 0; i < s.items.size(); ++i) {
    const test::ZipEntry* e = z.find("trainable_params/data/" + std::to_string(i));
    ASSERT_NE(e, nullptr);
    const SafetensorsWriteItem& it = s.items[i];
    EXPECT_EQ(e->data, std::string(reinterpret_cast<const char*>(s.buffers[i].data()), s.buffers[i].size())) << it.name;
    EXPECT_EQ(e->data_offset % 64, 0u) << it.name;
  }
  // The pickle: a dict filled by one SETITEMS, each name then _rebuild_tensor_v2 over its storage class, in order.
  const std::string pkl = z.find("trainable_params/data.pkl")->data;
  EXPECT_EQ(pkl.substr(0, 4), "\x80\x02}(");
  EXPECT_EQ(pkl.substr(pkl.size() - 2), "u.");
  size_t at = 0;
  const char* classes[] = {"FloatStorage", "BFloat16Storage", "HalfStorage", "DoubleStorage", "IntStorage",
                           "FloatStorage", "FloatStorage"};
  for (size_t i = 0; i < s.items.size(); ++i) {
    const size_t name_at = pkl.find("X" + std::string(1, char(s.items[i].name.size())) + std::string(3, '\0') +
                                    s.items[i].name, at);
    ASSERT_NE(name_at, std::string::npos) << s.items[i].name;
    const size_t rebuild_at = pkl.find("ctorch._utils\n_rebuild_tensor_v2\n", name_at);
    const size_t class_at = pkl.find(std::string("ctorch\n") + classes[i] + "\n", name_at);
    EXPECT_LT(rebuild_at, class_at) << s.items[i].name;
    at = class_at;
  }
  EXPECT_EQ(pkl.find("\x80\x02", 2), std::string::npos) << "one PROTO";
  // No key the weights-only unpickler refuses: only the three globals.
  std::set<std::string> globals;
  for (size_t g = pkl.find('c'); g != std::string::npos; g = pkl.find('c', g + 1)) {
    if (pkl.compare(g, 7, "ctorch\n") == 0 || pkl.compare(g, 14, "ctorch._utils\n") == 0 ||
        pkl.compare(g, 13, "ccollections\n") == 0) {
      const size_t nl1 = pkl.find('\n', g), nl2 = pkl.find('\n', nl1 + 1);
      globals.insert(pkl.substr(g + 1, nl2 - g - 1));
    }
  }
  EXPECT_TRUE(globals.count("torch._utils\n_rebuild_tensor_v2"));
  EXPECT_TRUE(globals.count("collections\nOrderedDict"));

  // An empty state dict: `{}`, no data records.
  write_torch_state_dict(dir / "empty.bin", {});
  const test::ZipArchive e = test::read_zip_file(dir / "empty.bin");
  ASSERT_EQ(e.entries.size(), 3u);
  EXPECT_EQ(e.entries[0].name, "empty/data.pkl");
  EXPECT_EQ(e.entries[0].data, std::string("\x80\x02}."));
}

TEST(TorchFile, RefusesBadItemsWithoutLeavingAFile) {
  test::TempDir dir;
  const std::string path = dir / "t.bin";
  float x[2] = {1, 2};
  struct Case {
    std::vector<SafetensorsWriteItem> items;
    const char* expected;
  } cases[] = {
      {{{"a", DType::F32, {2}, x}, {"a", DType::F32, {2}, x}}, "`a` is given more than once"},
      {{{"", DType::F32, {2}, x}}, "empty name"},
      {{{"a", DType::F32, {2}, nullptr}}, "`a` has 2 elements but no data"},
      {{{"a", DType::F32, {-2}, x}}, "`a` has an invalid shape"},
      {{{"a", DType::F32, {int64_t(1) << 40, int64_t(1) << 40}, x}}, "`a` has an invalid shape"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of([&] { write_torch_state_dict(path, c.items); });
    EXPECT_NE(msg.find(c.expected), std::string::npos) << msg;
    EXPECT_NE(msg.find(path), std::string::npos) << msg;
    EXPECT_TRUE(fs::is_empty(dir.path())) << c.expected;
  }
}

// ---- what torch.load reads (recorded by scripts/check_torch_file.py) ------------------------------------------------

// Writes the samples the Python check loads: each <name>.bin with its tensors also in <name>.safetensors (the
// reference values), deterministically.
void write_samples(const std::string& dir) {
  const Sample mixed = mixed_sample();
  write_torch_state_dict(dir + "/mixed.bin", mixed.items);
  write_safetensors(dir + "/mixed.safetensors", mixed.items);
  TorchFileOptions zip64;
  zip64.force_zip64 = true;
  write_torch_state_dict(dir + "/mixed_zip64.bin", mixed.items, zip64);
  write_safetensors(dir + "/mixed_zip64.safetensors", mixed.items);
  write_torch_state_dict(dir + "/empty.bin", {});
  write_safetensors(dir + "/empty.safetensors", {});
  Sample many;  // more entries than one pickle SETITEMS batch of Python's (1000), bf16 like an exported adapter
  for (int i = 0; i < 1200; ++i) many.add("model.layers." + std::to_string(i) + ".input_layernorm.weight", DType::BF16, {3}, 100 + uint64_t(i));
  write_torch_state_dict(dir + "/many.bin", many.items);
  write_safetensors(dir + "/many.safetensors", many.items);
}

TEST(TorchFile, MatchesRecordedCheck) {
  const char* keep = std::getenv("LL_TORCH_FILE_DIR");  // set by the rerun steps in scripts/check_torch_file.py
  test::TempDir temp;
  const std::string dir = keep && *keep ? keep : temp.path();
  if (keep && *keep) {
    make_directories(dir);
    for (const auto& e : fs::directory_iterator(dir)) {
      const std::string ext = e.path().extension().string();
      ASSERT_TRUE(ext == ".bin" || ext == ".safetensors")
          << "LL_TORCH_FILE_DIR=" << dir << " holds `" << e.path().filename().string() << "`; point it at a new folder";
    }
  }
  write_samples(dir);
  if (keep && *keep) std::printf("TorchFile: wrote %s; now run scripts/check_torch_file.py %s\n", dir.c_str(), dir.c_str());

  const Json record = Json::parse(read_text_file(test::fixtures_dir() + "/torch_file_check.json"));
  EXPECT_TRUE(record.at("passed").get<bool>()) << "the recorded torch.load check failed: " << record.dump(2);
  std::printf("TorchFile: recorded check passed with torch %s\n", record.at("torch_version").get<std::string>().c_str());
  std::set<std::string> ours, recorded;
  for (const auto& e : fs::directory_iterator(dir)) ours.insert(e.path().filename().string());
  for (const auto& [name, sha] : record.at("files").items()) {
    recorded.insert(name);
    EXPECT_EQ(sha256_file(dir + "/" + name), sha.get<std::string>())
        << name << " differs from the file torch.load checked: the writer changed, so rerun the check "
        << "(steps in scripts/check_torch_file.py)";
  }
  EXPECT_EQ(ours, recorded) << "the set of files written differs from the checked set; rerun the check";
}

}  // namespace
}  // namespace ll
