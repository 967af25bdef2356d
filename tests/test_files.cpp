// Reading user-given paths never blocks or runs away: a FIFO (named pipe) would block the open (or the read) until a
// writer appears, a link to /dev/zero would be read until memory runs out, a huge config-like file would be read
// whole. Every reader of a user-given path refuses what is not a regular file, naming the path and what it is.
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <chrono>
#include <functional>
#include <future>
#include <string>

#include "data/documents.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "io/hf_config.h"
#include "io/json_util.h"
#include "io/llama2c.h"
#include "io/safetensors.h"
#include "test_data_util.h"
#include "util/error.h"
#include "util/files.h"
#include "util/flags.h"

namespace {

using ll::test::TempDir;

// Runs `read` on another thread and expects an ll::Error naming `path` and `what` within a few seconds. When it
// blocks instead (the FIFO's open or read waits for a writer), the test fails and the FIFO is opened for writing and
// closed, which releases the reader, so the test ends either way.
void expect_refused_quickly(const std::function<void()>& read, const std::string& path, const std::string& what) {
  auto result = std::async(std::launch::async, [&]() -> std::string {
    try {
      read();
    } catch (const ll::Error& e) {
      return e.what();
    }
    return "(no error)";
  });
  if (result.wait_for(std::chrono::seconds(10)) != std::future_status::ready) {
    ADD_FAILURE() << "reading " << path << " still blocks after 10 s";
    const int w = ::open(path.c_str(), O_WRONLY | O_NONBLOCK);
    if (w >= 0) ::close(w);
  }
  const std::string message = result.get();
  EXPECT_NE(message.find(path), std::string::npos) << message;
  EXPECT_NE(message.find(what), std::string::npos) << message;
}

std::string make_fifo(const TempDir& dir, const std::string& name) {
  const std::string path = dir.file(name);
  if (::mkfifo(path.c_str(), 0600) != 0) ADD_FAILURE() << "mkfifo " << path;
  return path;
}

}  // namespace

TEST(RegularFilesOnly, FifoConfigJsonIsRefusedWithoutBlocking) {
  TempDir dir;
  const std::string fifo = make_fifo(dir, "config.json");
  expect_refused_quickly([&] { ll::read_hf_config(dir.path()); }, fifo, "FIFO");
  expect_refused_quickly([&] { ll::read_json_file(fifo); }, fifo, "FIFO");
  expect_refused_quickly([&] { ll::read_text_file(fifo); }, fifo, "FIFO");
}

TEST(RegularFilesOnly, FifoWeightsAndDataAreRefusedWithoutBlocking) {
  TempDir dir;
  const std::string weights = make_fifo(dir, "model.safetensors");
  expect_refused_quickly([&] { ll::SafetensorsFile f(weights); }, weights, "FIFO");
  const std::string tokens = make_fifo(dir, "train.bin");
  expect_refused_quickly([&] { ll::TokenFile f(tokens, 32000); }, tokens, "FIFO");
  const std::string legacy = make_fifo(dir, "stories.bin");
  expect_refused_quickly([&] { ll::read_llama2c_header(legacy); }, legacy, "FIFO");
  const std::string tok = make_fifo(dir, "tokenizer.model");
  expect_refused_quickly([&] { ll::Tokenizer::load(tok); }, tok, "FIFO");
  const std::string flags = make_fifo(dir, "flags.json");
  expect_refused_quickly(
      [&] {
        ll::Flags f("test", "");
        std::string args[] = {"test", "--config", flags};
        char* argv[] = {args[0].data(), args[1].data(), args[2].data()};
        f.parse(3, argv);
      },
      flags, "FIFO");
}

TEST(RegularFilesOnly, FifoDatasetsAreRefusedWithoutBlocking) {
  TempDir dir;
  const auto ignore = [](std::string&&) {};
  for (const char* name : {"books.txt", "lines.txt", "records.jsonl", "long_alpaca.json", "paper.pdf"}) {
    SCOPED_TRACE(name);
    const std::string fifo = make_fifo(dir, name);
    const ll::InputFormat format = ll::resolve_input_format("auto", fifo, std::string(name) == "lines.txt");
    expect_refused_quickly([&] { ll::read_documents(fifo, format, "text", ignore); }, fifo, "FIFO");
  }
  const std::string sft = make_fifo(dir, "sft.json");
  expect_refused_quickly([&] { ll::read_sft_records(sft, [](ll::SftRecord&&) {}); }, sft, "FIFO");
}

// /dev/zero never ends: read whole, it grew a string until bad_alloc.
TEST(RegularFilesOnly, LinkToDevZeroIsRefused) {
  TempDir dir;
  const std::string link = dir.file("config.json");
  ASSERT_EQ(::symlink("/dev/zero", link.c_str()), 0);
  expect_refused_quickly([&] { ll::read_hf_config(dir.path()); }, link, "character device");
  expect_refused_quickly([&] { ll::read_documents(link, ll::InputFormat::Text, "text", [](std::string&&) {}); }, link,
                         "character device");
}

TEST(RegularFilesOnly, DirectoryIsRefusedNamingIt) {
  TempDir dir;
  const std::string sub = dir.file("config.json");
  ASSERT_EQ(::mkdir(sub.c_str(), 0700), 0);
  expect_refused_quickly([&] { ll::read_json_file(sub); }, sub, "directory");
}

// A config-like JSON file is small; a 65 MiB one (sparse: no disk used) is refused before it is read.
TEST(RegularFilesOnly, OversizedJsonFileIsRefusedBeforeReading) {
  TempDir dir;
  const std::string big = dir.file("config.json");
  const int fd = ::open(big.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, off_t(65) << 20), 0);
  ::close(fd);
  expect_refused_quickly([&] { ll::read_json_file(big); }, big, "64 MiB");
  // Documents have no such bound: a text document of the same size reads whole.
  size_t bytes = 0;
  ll::read_documents(big, ll::InputFormat::Text, "text", [&](std::string&& doc) { bytes = doc.size(); });
  EXPECT_EQ(bytes, size_t(65) << 20);
}

TEST(RegularFilesOnly, MissingFileSaysSo) {
  TempDir dir;
  const std::string missing = dir.file("nope.json");
  expect_refused_quickly([&] { ll::read_text_file(missing); }, missing, "No such file");
}
