// Token files: every format writes and reads back the same ids; the reader's detection and validation rules
// (formats.md §A5); sidecar round trip.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "data/token_file.h"
#include "test_data_util.h"
#include "train/data.h"
#include "util/error.h"
#include "test_util.h"

using ll::TokenFile;
using ll::TokenFileWriter;
using ll::TokenFormat;
using ll::test::read_bytes;
using ll::test::TempDir;
using ll::test::write_bytes;
using Ids = std::vector<int32_t>;

namespace {

using ll::test::error_of;

std::string u16s(const std::vector<uint16_t>& v) {
  return std::string(reinterpret_cast<const char*>(v.data()), v.size() * 2);
}

std::string llmc_header(int32_t magic, int32_t version, int32_t ntok) {
  std::vector<int32_t> h(256, 0);
  h[0] = magic, h[1] = version, h[2] = ntok;
  return std::string(reinterpret_cast<const char*>(h.data()), 1024);
}

Ids read_all(const TokenFile& f) {
  Ids out(size_t(f.size()));
  f.read(0, f.size(), out.data());
  return out;
}

// Ids that cross the writer's 1 MiB buffer and cover both ends of the id range.
Ids sample_ids(int32_t max_id) {
  Ids ids;
  for (int32_t i = 0; i < 700000; ++i) ids.push_back(int32_t((int64_t(i) * 7919) % (int64_t(max_id) + 1)));
  ids.push_back(0);
  ids.push_back(max_id);
  return ids;
}

}  // namespace

TEST(TokenFile, EveryFormatRoundTrips) {
  TempDir dir;
  const struct {
    TokenFormat format;
    int32_t max_id;
    size_t header, width;
  } cases[] = {
      {TokenFormat::Raw16, 65535, 0, 2}, {TokenFormat::Llmc16, 65535, 1024, 2}, {TokenFormat::Llmc32, 200000, 1024, 4}};
  for (const auto& c : cases) {
    SCOPED_TRACE(ll::token_format_name(c.format));
    const std::string path = dir.file(std::string(ll::token_format_name(c.format)) + ".bin");
    const Ids ids = sample_ids(c.max_id);
    {
      TokenFileWriter w(path, c.format);
      w.append(ids.data(), 3);  // several appends, as the job does
      w.append(ids.data() + 3, ids.size() - 3);
      EXPECT_EQ(w.count(), int64_t(ids.size()));
      w.finish();
    }
    EXPECT_EQ(std::filesystem::file_size(path), c.header + ids.size() * c.width);
    const TokenFile f(path, c.max_id + 1);
    EXPECT_EQ(f.format(), c.format);
    ASSERT_EQ(f.size(), int64_t(ids.size()));
    EXPECT_EQ(read_all(f), ids);
    EXPECT_EQ(f.at(1), ids[1]);
    EXPECT_EQ(f.at(f.size() - 1), c.max_id);
    Ids middle(5);
    f.read(1000, 5, middle.data());
    EXPECT_EQ(middle, Ids(ids.begin() + 1000, ids.begin() + 1005));
  }
}

TEST(TokenFile, RawIsLongLoRAsByteLayout) {
  TempDir dir;
  const std::string path = dir.file("raw.bin");
  TokenFileWriter w(path, TokenFormat::Raw16);
  w.append(Ids{1, 306, 31999, 2});
  w.finish();
  // np.memmap(path, dtype=np.uint16): little-endian, no header.
  EXPECT_EQ(read_bytes(path), std::string("\x01\x00\x32\x01\xff\x7c\x02\x00", 8));
}

TEST(TokenFile, LlmcHeaderFields) {
  TempDir dir;
  for (const auto format : {TokenFormat::Llmc16, TokenFormat::Llmc32}) {
    const std::string path = dir.file("h.bin");
    TokenFileWriter w(path, format);
    w.append(Ids{5, 6, 7});
    w.finish();
    const std::string bytes = read_bytes(path);
    ASSERT_GE(bytes.size(), 1024u);
    int32_t h[256];
    std::memcpy(h, bytes.data(), 1024);
    EXPECT_EQ(h[0], format == TokenFormat::Llmc16 ? 20240520 : 20240801);
    EXPECT_EQ(h[1], format == TokenFormat::Llmc16 ? 1 : 7);
    EXPECT_EQ(h[2], 3);
    for (int i = 3; i < 256; ++i) ASSERT_EQ(h[i], 0) << "header int " << i;
  }
}

TEST(TokenFile, FormatNames) {
  EXPECT_EQ(ll::parse_token_format("raw", 32000), TokenFormat::Raw16);
  EXPECT_EQ(ll::parse_token_format("llmc", 32000), TokenFormat::Llmc16);
  EXPECT_EQ(ll::parse_token_format("llmc", 65536), TokenFormat::Llmc16);
  EXPECT_EQ(ll::parse_token_format("llmc", 65537), TokenFormat::Llmc32);
  EXPECT_EQ(ll::parse_token_format("llmc", 128256), TokenFormat::Llmc32);
  for (auto f : {TokenFormat::Raw16, TokenFormat::Llmc16, TokenFormat::Llmc32})
    EXPECT_EQ(ll::parse_token_format(ll::token_format_name(f), 32000), f);
  EXPECT_NE(error_of([] { ll::parse_token_format("npy", 32000); }).find("unknown token file format `npy`"),
            std::string::npos);
}

TEST(TokenFile, WriterRejectsIdsTheFormatCannotHold) {
  TempDir dir;
  const std::string path = dir.file("raw.bin");
  {
    TokenFileWriter w(path, TokenFormat::Raw16);
    w.append(Ids{1, 2, 3});
    const std::string e = error_of([&] { w.append(Ids{4, 65536}); });
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find("token id 65536 at position 4"), std::string::npos) << e;
    EXPECT_NE(e.find("llmc"), std::string::npos) << e;
    EXPECT_NE(error_of([&] { w.append(Ids{-1}); }).find("token id -1"), std::string::npos);
  }
  // Never finished: neither the file nor its temporary exists.
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_TRUE(std::filesystem::is_empty(dir.path()));
  TokenFileWriter w16(dir.file("l16.bin"), TokenFormat::Llmc16);
  EXPECT_NE(error_of([&] { w16.append(Ids{70000}); }).find("token id 70000"), std::string::npos);
}

TEST(TokenFile, FinishReplacesAnExistingFileAtomically) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_bytes(path, "old contents");
  TokenFileWriter w(path, TokenFormat::Raw16);
  w.append(Ids{9, 8});
  EXPECT_EQ(read_bytes(path), "old contents");  // readers see the old file until finish()
  w.finish();
  EXPECT_EQ(read_bytes(path), u16s({9, 8}));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 1);
}

TEST(TokenFile, RejectsOddSizedRawFile) {
  TempDir dir;
  const std::string path = dir.file("odd.bin");
  write_bytes(path, u16s({1, 2, 3}) + "x");
  const std::string e = error_of([&] { TokenFile(path, 32000); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("odd size (7 bytes)"), std::string::npos) << e;
}

TEST(TokenFile, RejectsBadHeaders) {
  TempDir dir;
  const std::string path = dir.file("bad.bin");
  auto expect_error = [&](const std::string& bytes, const std::string& what) {
    write_bytes(path, bytes);
    const std::string e = error_of([&] { TokenFile(path, 32000); });
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << "expected `" << what << "` in: " << e;
  };
  // ntok says 4 tokens but 3 are present (truncated), or 5 are present (trailing bytes).
  expect_error(llmc_header(20240520, 1, 4) + u16s({1, 2, 3}), "header says 4 tokens");
  expect_error(llmc_header(20240520, 1, 4) + u16s({1, 2, 3, 4, 5}),
               "should be 1024 + 4×2 = 1032 bytes, but it is 1034");
  expect_error(llmc_header(20240801, 7, 2) + u16s({1, 2}), "1024 + 2×4 = 1032 bytes, but it is 1028");
  expect_error(llmc_header(20240520, 1, -3), "header says -3 tokens");
  expect_error(llmc_header(20240520, 7, 1) + u16s({1}), "needs version 1, the header says 7");
  expect_error(llmc_header(20240801, 1, 1) + u16s({1, 0}), "needs version 7, the header says 1");
  expect_error(llmc_header(20240520, 1, 0).substr(0, 100), "shorter than the 1024-byte header");
  expect_error(llmc_header(20240520, 1, 0), "contains no tokens");
  expect_error("", "is empty");
}

TEST(TokenFile, RejectsIdsOutsideTheVocabulary) {
  TempDir dir;
  const std::string raw = dir.file("raw.bin");
  write_bytes(raw, u16s({1, 31999, 32000, 5}));
  EXPECT_NO_THROW(TokenFile(raw, 32001));
  std::string e = error_of([&] { TokenFile(raw, 32000); });
  EXPECT_NE(e.find(raw), std::string::npos) << e;
  EXPECT_NE(e.find("token id 32000 at position 2"), std::string::npos) << e;
  const std::string l32 = dir.file("l32.bin");
  TokenFileWriter w(l32, TokenFormat::Llmc32);
  w.append(Ids{0, 1, 128255, 128256});
  w.finish();
  e = error_of([&] { TokenFile(l32, 128256); });
  EXPECT_NE(e.find(l32), std::string::npos) << e;
  EXPECT_NE(e.find("token id 128256 at position 3"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { TokenFile(raw, 0); }).find("vocabulary size must be positive"), std::string::npos);
  EXPECT_NE(error_of([&] { TokenFile(dir.file("missing.bin"), 10); }).find("missing.bin"), std::string::npos);
}

TEST(TokenFile, RawFileShapedLikeAHeaderWithoutMagicIsRaw) {
  // A large raw file whose size is 1024 + 2n and whose third int32 is n: only the magic makes a header.
  TempDir dir;
  const std::string path = dir.file("raw.bin");
  const int32_t n = 5000;
  std::vector<uint16_t> ids(512 + n);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = uint16_t(i % 32000);
  ids[4] = uint16_t(n & 0xffff), ids[5] = uint16_t(n >> 16);  // int32 #2 == n
  write_bytes(path, u16s(ids));
  const TokenFile f(path, 32000);
  EXPECT_EQ(f.format(), TokenFormat::Raw16);
  ASSERT_EQ(f.size(), int64_t(ids.size()));
  EXPECT_EQ(f.at(0), 0);
  EXPECT_EQ(f.at(4), n);
  EXPECT_EQ(f.at(f.size() - 1), int32_t(ids.back()));
}

TEST(TokenFile, RawStreamStartingWithHalfAMagicIsRaw) {
  // 55432 is the low half of 20240520; with a large vocabulary a raw stream may start with it. Only the full
  // int32 magic selects the header.
  TempDir dir;
  const std::string path = dir.file("raw.bin");
  write_bytes(path, u16s({55432, 7, 8, 9}));
  const TokenFile f(path, 65536);
  EXPECT_EQ(f.format(), TokenFormat::Raw16);
  EXPECT_EQ(read_all(f), (Ids{55432, 7, 8, 9}));
  // With Llama-2's vocabulary the same file is rejected by the id check.
  EXPECT_NE(error_of([&] { TokenFile(path, 32000); }).find("token id 55432 at position 0"), std::string::npos);
}

TEST(TokenFile, ReadBoundsAndMove) {
  TempDir dir;
  const std::string path = dir.file("t.bin");
  write_bytes(path, u16s({1, 2, 3}));
  TokenFile f(path, 10);
  int32_t out[4];
  EXPECT_NE(error_of([&] { f.read(1, 3, out); }).find("range [1, 4) is outside [0, 3)"), std::string::npos);
  EXPECT_NE(error_of([&] { f.read(-1, 1, out); }).find("outside"), std::string::npos);
  EXPECT_NE(error_of([&] { f.at(3); }).find("position 3"), std::string::npos);
  TokenFile g = std::move(f);
  EXPECT_EQ(g.size(), 3);
  EXPECT_EQ(g.at(2), 3);
  EXPECT_EQ(f.size(), 0);
}

// The file is read while training runs; a token file truncated or rewritten in place under a memory mapping killed
// the run with SIGBUS (no message, no checkpoint). Now every read names the file and stops with an error.
TEST(TokenFile, TruncatedWhileOpenIsAnErrorNamingTheFile) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  std::vector<uint16_t> ids(20000);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = uint16_t(i % 1000);
  write_bytes(path, u16s(ids));
  TokenFile f(path, 1000);
  ASSERT_EQ(::truncate(path.c_str(), 1000), 0);  // in place: the open file shrinks under the reader
  Ids out(100);
  const std::string e = error_of([&] { f.read(15000, 100, out.data()); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("changed since it was opened"), std::string::npos) << e;
  EXPECT_NE(error_of([&] { f.at(19999); }).find(path), std::string::npos);
}

TEST(TokenFile, RewrittenInPlaceWhileOpenIsAnError) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  write_bytes(path, u16s(std::vector<uint16_t>(4096, 7)));
  TokenFile f(path, 1000);
  Ids out(8);
  f.read(0, 8, out.data());
  EXPECT_EQ(out, Ids(8, 7));
  {  // same size, other ids, written through the same inode (as `cp new old` or a re-run writing in place does)
    std::fstream io(path, std::ios::in | std::ios::out | std::ios::binary);
    const std::string other = u16s(std::vector<uint16_t>(4096, 9));
    io.write(other.data(), std::streamsize(other.size()));
  }
  const struct timespec later[2] = {{0, UTIME_OMIT}, {2000000000, 0}};  // a coarse clock may not have ticked yet
  ASSERT_EQ(::utimensat(AT_FDCWD, path.c_str(), later, 0), 0);
  const std::string e = error_of([&] { f.read(0, 8, out.data()); });
  EXPECT_NE(e.find(path), std::string::npos) << e;
  EXPECT_NE(e.find("changed since it was opened"), std::string::npos) << e;
}

// Replacing the file by rename (what TokenFileWriter does) is harmless: the open file keeps the old contents.
TEST(TokenFile, ReplacedByRenameKeepsReadingTheOpenedFile) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  write_bytes(path, u16s(std::vector<uint16_t>(64, 3)));
  TokenFile f(path, 1000);
  write_bytes(dir.file("new.bin"), u16s(std::vector<uint16_t>(8, 5)));
  ASSERT_EQ(std::rename(dir.file("new.bin").c_str(), path.c_str()), 0);
  Ids out(4);
  f.read(60, 4, out.data());
  EXPECT_EQ(out, Ids(4, 3));
}

TEST(TokenFile, PretrainSourceStopsWithTheFileNameWhenTheFileShrinks) {
  TempDir dir;
  const std::string path = dir.file("train.bin");
  std::vector<uint16_t> ids(64 * 100);
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = uint16_t(i % 50);
  write_bytes(path, u16s(ids));
  auto file = std::make_shared<const TokenFile>(path, 50);
  ll::PretrainSource source(file, 64, 2, 1);
  ll::HostBatch batch;
  source.next(batch);
  ASSERT_EQ(::truncate(path.c_str(), 128), 0);
  const std::string e = error_of([&] {
    for (int i = 0; i < 50; ++i) source.next(batch);  // some row beyond the first 64 tokens comes up
  });
  EXPECT_NE(e.find(path), std::string::npos) << e;
}

TEST(TokenFile, SidecarRoundTrip) {
  TempDir dir;
  const std::string bin = dir.file("out.bin");
  ll::TokenFileSidecar s;
  s.format = "llmc_uint16";
  s.token_count = 123, s.document_count = 4, s.empty_documents_skipped = 1;
  s.bos = true, s.eos = false, s.bos_id = 1, s.eos_id = 2;
  s.tokenizer_path = "/x/tokenizer.model", s.tokenizer_md5 = "eeec4125e9c7560836b4873b6f8e3025";
  s.vocab_size = 32000, s.input_format = "jsonl", s.text_field = "content";
  s.inputs = {"a.jsonl", "b.jsonl"};
  ll::write_sidecar(bin, s);
  EXPECT_EQ(ll::sidecar_path(bin), bin + ".json");
  const ll::TokenFileSidecar r = ll::read_sidecar(bin);
  EXPECT_EQ(r.format, s.format);
  EXPECT_EQ(r.token_count, 123);
  EXPECT_EQ(r.document_count, 4);
  EXPECT_EQ(r.empty_documents_skipped, 1);
  EXPECT_TRUE(r.bos);
  EXPECT_FALSE(r.eos);
  EXPECT_EQ(r.bos_id, 1);
  EXPECT_EQ(r.eos_id, 2);
  EXPECT_EQ(r.tokenizer_path, s.tokenizer_path);
  EXPECT_EQ(r.tokenizer_md5, s.tokenizer_md5);
  EXPECT_EQ(r.vocab_size, 32000);
  EXPECT_EQ(r.input_format, "jsonl");
  EXPECT_EQ(r.text_field, "content");
  EXPECT_EQ(r.inputs, s.inputs);
  EXPECT_NE(read_bytes(bin + ".json").find("\"convention\": \"each document is BOS + tokens"), std::string::npos);
  write_bytes(bin + ".json", "{\"format\": 3}");
  const std::string e = error_of([&] { ll::read_sidecar(bin); });
  EXPECT_NE(e.find(bin + ".json"), std::string::npos) << e;
}
