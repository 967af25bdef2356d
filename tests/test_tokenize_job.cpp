// The tokenization job (build/tokenize): thread-count independence, sidecar counts, BOS/EOS placement,
// every input format and its errors, batching under a small memory budget. Uses the spm_train tokenizer.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "data/documents.h"
#include "data/token_file.h"
#include "data/tokenize_job.h"
#include "data/tokenizer.h"
#include "test_data_util.h"
#include "util/error.h"
#include "test_util.h"

using ll::TokenizeOptions;
using ll::Tokenizer;
using ll::test::read_bytes;
using ll::test::TempDir;
using ll::test::write_bytes;
using Ids = std::vector<int32_t>;

namespace {

using ll::test::error_of;

// Deterministic documents of varying length, with spaces, digits, newlines and non-ASCII text.
std::vector<std::string> make_docs(int count, uint64_t seed) {
  const char* words[] = {"kalo",  "mine",  "ruta", "shipo", "deva", "zuri", "the",    "and",
                         "héllo", "wörld", "🦙", "42",    "  ",   "\n",   "Tabs\t", "1999,"};
  std::vector<std::string> docs;
  for (int d = 0; d < count; ++d) {
    std::string doc;
    const int n = 1 + int((seed = seed * 6364136223846793005ull + 1) >> 58) * 9;
    for (int w = 0; w < n; ++w) {
      seed = seed * 6364136223846793005ull + 1442695040888963407ull;
      if (w) doc += ' ';
      doc += words[(seed >> 33) % 16];
    }
    docs.push_back(doc);
  }
  return docs;
}

Ids expected_ids(const Tokenizer& tok, const std::vector<std::string>& docs, bool bos, bool eos) {
  Ids out;
  for (const std::string& d : docs) {
    const Ids ids = tok.encode(d, bos, eos);
    out.insert(out.end(), ids.begin(), ids.end());
  }
  return out;
}

Ids read_tokens(const std::string& path, int64_t vocab) {
  const ll::TokenFile f(path, vocab);
  Ids out(size_t(f.size()));
  f.read(0, f.size(), out.data());
  return out;
}

std::string jsonl_line(const std::string& field, const std::string& text) {
  return nlohmann::json{{"id", 7}, {field, text}}.dump() + "\n";
}

class TokenizeJob : public ::testing::Test {
 protected:
  void SetUp() override {
    const ll::test::SmallTokenizer& t = ll::test::small_tokenizer();
    if (!t.skip_reason.empty()) GTEST_SKIP() << t.skip_reason;
    ASSERT_TRUE(t.error.empty()) << t.error;
    tokenizer_path = t.path;
    tok.emplace(Tokenizer::load(t.path));
  }
  TokenizeOptions options(std::vector<std::string> inputs, const std::string& output) const {
    TokenizeOptions o;
    o.inputs = std::move(inputs);
    o.output = output;
    o.tokenizer = tokenizer_path;
    return o;
  }
  std::string tokenizer_path;
  std::optional<Tokenizer> tok;
  TempDir dir;
};

}  // namespace

TEST_F(TokenizeJob, SameBytesForOneAndFourThreads) {
  const std::vector<std::string> docs = make_docs(300, 1);
  std::string lines;
  for (const std::string& d : docs) lines += jsonl_line("text", d);
  write_bytes(dir.file("a.jsonl"), lines);
  write_bytes(dir.file("b.txt"), docs[7] + "\n" + docs[9]);
  std::string outputs[2];
  int i = 0;
  for (int threads : {1, 4}) {
    TokenizeOptions o =
        options({dir.file("a.jsonl"), dir.file("b.txt")}, dir.file("t" + std::to_string(threads) + ".bin"));
    o.threads = threads;
    o.batch_bytes = 3000;  // many batches, each split over the threads
    const ll::TokenizeStats s = ll::tokenize_corpus(o);
    EXPECT_EQ(s.documents, 301);
    EXPECT_GT(s.batches, 5);
    outputs[i++] = read_bytes(o.output);
  }
  ASSERT_FALSE(outputs[0].empty());
  EXPECT_EQ(outputs[0], outputs[1]);
  std::vector<std::string> all = docs;
  all.push_back(docs[7] + "\n" + docs[9]);
  EXPECT_EQ(read_tokens(dir.file("t4.bin"), 400), expected_ids(*tok, all, true, true));
  // The sidecars differ only by nothing: the same inputs, counts and tokenizer.
  EXPECT_EQ(read_bytes(dir.file("t1.bin.json")), read_bytes(dir.file("t4.bin.json")));
}

TEST_F(TokenizeJob, TextFilesSidecarAndBosEosPlacement) {
  std::filesystem::create_directories(dir.file("books/sub"));
  write_bytes(dir.file("books/b.txt"), "mine ruta\n\nshipo.");
  write_bytes(dir.file("books/sub/c.txt"), "");  // empty document: skipped and counted
  write_bytes(dir.file("books/a.txt"), "kalo 123");
  write_bytes(dir.file("books/.hidden"), "never read");
  const std::string out = dir.file("out/books.bin");  // the output directory is created
  const ll::TokenizeStats s = ll::tokenize_corpus(options({dir.file("books")}, out));
  const Ids a = tok->encode("kalo 123", false, false), b = tok->encode("mine ruta\n\nshipo.", false, false);
  Ids want = {1};
  want.insert(want.end(), a.begin(), a.end());
  want.insert(want.end(), {2, 1});
  want.insert(want.end(), b.begin(), b.end());
  want.push_back(2);
  EXPECT_EQ(read_tokens(out, 400), want);
  EXPECT_EQ(std::filesystem::file_size(out), want.size() * 2);  // raw uint16 by default
  EXPECT_EQ(s.documents, 2);
  EXPECT_EQ(s.empty_documents, 1);
  EXPECT_EQ(s.tokens, int64_t(want.size()));

  const ll::TokenFileSidecar side = ll::read_sidecar(out);
  EXPECT_EQ(side.format, "raw_uint16");
  EXPECT_EQ(side.document_count, 2);
  EXPECT_EQ(side.empty_documents_skipped, 1);
  EXPECT_EQ(side.token_count, int64_t(want.size()));
  EXPECT_TRUE(side.bos && side.eos);
  EXPECT_EQ(side.bos_id, 1);
  EXPECT_EQ(side.eos_id, 2);
  EXPECT_EQ(side.vocab_size, 400);
  EXPECT_EQ(side.tokenizer_md5, tok->md5());
  EXPECT_EQ(side.input_format, "text");
  EXPECT_EQ(side.inputs,
            (std::vector<std::string>{dir.file("books/a.txt"), dir.file("books/b.txt"), dir.file("books/sub/c.txt")}));

  // --bos false: documents are tokens + EOS (EOS-separated, like landmark-attention's files).
  TokenizeOptions o = options({dir.file("books/a.txt"), dir.file("books/b.txt")}, dir.file("eos_only.bin"));
  o.bos = false;
  ll::tokenize_corpus(o);
  Ids eos_only = a;
  eos_only.push_back(2);
  eos_only.insert(eos_only.end(), b.begin(), b.end());
  eos_only.push_back(2);
  EXPECT_EQ(read_tokens(o.output, 400), eos_only);
  EXPECT_FALSE(ll::read_sidecar(o.output).bos);
  o.eos = false, o.output = dir.file("neither.bin");
  ll::tokenize_corpus(o);
  EXPECT_EQ(read_tokens(o.output, 400), expected_ids(*tok, {"kalo 123", "mine ruta\n\nshipo."}, false, false));
}

// --tokenizer given the model folder: the job uses <folder>/tokenizer.model and the sidecar records that file.
TEST_F(TokenizeJob, TokenizerGivenAsModelFolder) {
  std::filesystem::create_directories(dir.file("model"));
  std::filesystem::copy_file(tokenizer_path, dir.file("model/tokenizer.model"));
  write_bytes(dir.file("a.txt"), "kalo 123");
  TokenizeOptions o = options({dir.file("a.txt")}, dir.file("a.bin"));
  o.tokenizer = dir.file("model");
  ll::tokenize_corpus(o);
  EXPECT_EQ(read_tokens(o.output, 400), expected_ids(*tok, {"kalo 123"}, true, true));
  const std::string recorded = ll::read_sidecar(o.output).tokenizer_path;
  EXPECT_EQ(std::filesystem::path(recorded).filename(), "tokenizer.model") << recorded;
  EXPECT_EQ(std::filesystem::path(recorded).parent_path().filename(), "model") << recorded;
}

TEST_F(TokenizeJob, OneDocumentPerLine) {
  write_bytes(dir.file("c.txt"), "kalo mine\r\n\nruta  shipo\nlast line without newline");
  TokenizeOptions o = options({dir.file("c.txt")}, dir.file("c.bin"));
  o.one_doc_per_line = true;
  const ll::TokenizeStats s = ll::tokenize_corpus(o);
  EXPECT_EQ(s.documents, 3);
  EXPECT_EQ(s.empty_documents, 1);
  EXPECT_EQ(read_tokens(o.output, 400),
            expected_ids(*tok, {"kalo mine", "ruta  shipo", "last line without newline"}, true, true));
  EXPECT_EQ(ll::read_sidecar(o.output).input_format, "lines");
  o.one_doc_per_line = false, o.input_format = "lines", o.output = dir.file("c2.bin");
  ll::tokenize_corpus(o);
  EXPECT_EQ(read_bytes(o.output), read_bytes(dir.file("c.bin")));
}

TEST_F(TokenizeJob, JsonlWithChosenField) {
  write_bytes(dir.file("d.jsonl"),
              jsonl_line("content", "kalo \"quoted\" mine") + "\n   \n" + jsonl_line("content", "héllo\nwörld 🦙"));
  TokenizeOptions o = options({dir.file("d.jsonl")}, dir.file("d.bin"));
  o.text_field = "content";
  EXPECT_EQ(ll::tokenize_corpus(o).documents, 2);
  EXPECT_EQ(read_tokens(o.output, 400),
            expected_ids(*tok, {"kalo \"quoted\" mine", "héllo\nwörld 🦙"}, true, true));
  const ll::TokenFileSidecar side = ll::read_sidecar(o.output);
  EXPECT_EQ(side.input_format, "jsonl");
  EXPECT_EQ(side.text_field, "content");
}

TEST_F(TokenizeJob, JsonlErrorsNameFileAndLine) {
  const std::string path = dir.file("bad.jsonl");
  auto expect_error = [&](const std::string& contents, const std::string& what) {
    write_bytes(path, contents);
    const std::string e = error_of([&] { ll::tokenize_corpus(options({path}, dir.file("bad.bin"))); });
    EXPECT_NE(e.find("`" + path + "` line "), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << "expected `" << what << "` in: " << e;
    EXPECT_FALSE(std::filesystem::exists(dir.file("bad.bin")));
    EXPECT_FALSE(std::filesystem::exists(dir.file("bad.bin.json")));
  };
  expect_error(jsonl_line("text", "ok") + jsonl_line("text", "ok") + "{\"text\": \"unterminated\n",
               "line 3 is not valid JSON");
  expect_error(jsonl_line("text", "ok") + jsonl_line("body", "no text field"), "line 2 has no field \"text\"");
  expect_error("{\"text\": 5}\n", "line 1: field \"text\" is a number, expected a string");
  expect_error("[\"text\"]\n", "line 1 is a JSON array, expected an object");
}

TEST_F(TokenizeJob, LongAlpacaList) {
  const std::string path = dir.file("alpaca.json");
  write_bytes(path, R"([
    {"instruction": "Summarize the book.", "output": "kalo mine.", "input": "", "file": {"nested": [1, "x", null]}},
    {"instruction": "Translate:", "input": "ruta shipo", "output": "deva"},
    {"output": "zuri", "instruction": "Null input means none.", "input": null}
  ])");
  const ll::TokenizeStats s = ll::tokenize_corpus(options({path}, dir.file("alpaca.bin")));
  EXPECT_EQ(s.documents, 3);
  const std::vector<std::string> docs = {"[INST]Summarize the book.[/INST]kalo mine.",
                                         ll::alpaca_document("Translate:", "ruta shipo", "deva"),
                                         "[INST]Null input means none.[/INST]zuri"};
  EXPECT_EQ(read_tokens(dir.file("alpaca.bin"), 400), expected_ids(*tok, docs, true, true));
  EXPECT_EQ(ll::read_sidecar(dir.file("alpaca.bin")).input_format, "alpaca_json");
  // LongLoRA's prompt_input_llama2 template, character for character.
  const std::string with_input = ll::alpaca_document("Q", "I", "A");
  EXPECT_EQ(with_input.rfind("[INST] <<SYS>>\nYou are a helpful, respectful and honest assistant. Always answer as "
                             "helpfully as possible, while being safe.  Your answers",
                             0),
            0u);
  EXPECT_NE(with_input.find("please don't share false information.\n<</SYS>> \n\n Q \nI [/INST]A"), std::string::npos)
      << with_input;
}

TEST_F(TokenizeJob, LongAlpacaErrors) {
  const std::string path = dir.file("bad.json");
  auto expect_error = [&](const std::string& contents, const std::string& what) {
    write_bytes(path, contents);
    const std::string e = error_of([&] { ll::tokenize_corpus(options({path}, dir.file("bad.bin"))); });
    EXPECT_NE(e.find(path), std::string::npos) << e;
    EXPECT_NE(e.find(what), std::string::npos) << "expected `" << what << "` in: " << e;
    EXPECT_FALSE(std::filesystem::exists(dir.file("bad.bin")));
  };
  expect_error(R"({"instruction": "a", "output": "b"})", "expected a list");
  expect_error(R"([{"instruction": "a", "output": "b"}, {"instruction": "c"}])", "record 2 lacks \"output\"");
  expect_error(R"([{"instruction": ["a"], "output": "b"}])", "record 1: \"instruction\" is a JSON array");
  expect_error(R"([{"instruction": "a", "output": 3}])", "\"output\" is a JSON number");
  expect_error(R"([{"instruction": "a", "output": "b"}, "loose string"])", "element 2 is a JSON string");
  expect_error(R"([{"instruction": "a", "output": "b"},)", "invalid JSON");
}

TEST_F(TokenizeJob, CorpusLargerThanTheBatchBudget) {
  // ~150 KB of LongAlpaca records through a 4 KB batch budget: many batches, none much larger than the budget
  // plus one document, and the output equals tokenizing every document on its own.
  const std::vector<std::string> texts = make_docs(400, 5);
  nlohmann::json list = nlohmann::json::array();
  std::vector<std::string> docs;
  for (size_t i = 0; i + 1 < texts.size(); i += 2) {
    list.push_back({{"instruction", texts[i]}, {"output", texts[i + 1]}, {"file", "x.txt"}});
    docs.push_back(ll::alpaca_document(texts[i], "", texts[i + 1]));
  }
  write_bytes(dir.file("big.json"), list.dump());
  TokenizeOptions o = options({dir.file("big.json")}, dir.file("big.bin"));
  o.batch_bytes = 4096;
  o.threads = 3;
  const ll::TokenizeStats s = ll::tokenize_corpus(o);
  int64_t total = 0;
  for (const std::string& d : docs) total += int64_t(d.size());
  EXPECT_EQ(s.text_bytes, total);
  EXPECT_GT(total, 20 * o.batch_bytes);
  EXPECT_GE(s.batches, total / (o.batch_bytes + s.largest_document));
  EXPECT_LE(s.peak_batch_bytes, o.batch_bytes + s.largest_document);
  EXPECT_EQ(s.documents, int64_t(docs.size()));
  EXPECT_EQ(read_tokens(o.output, 400), expected_ids(*tok, docs, true, true));
}

TEST_F(TokenizeJob, LongDocumentsEncodedInPartsGiveTheSameBytes) {
  ASSERT_TRUE(tok->can_split());
  std::vector<std::string> docs = make_docs(40, 3);
  std::string big;
  for (const std::string& d : docs) big += d + (big.size() % 3 ? " " : "  ");
  docs.push_back(big);  // one document of several KB, with whitespace runs
  std::string lines;
  for (const std::string& d : docs) lines += jsonl_line("text", d);
  write_bytes(dir.file("long.jsonl"), lines);
  std::string whole;
  for (int64_t split : {0, 1, 100, 4096}) {
    TokenizeOptions o = options({dir.file("long.jsonl")}, dir.file("long" + std::to_string(split) + ".bin"));
    o.split_bytes = split;
    o.threads = 3;
    const ll::TokenizeStats s = ll::tokenize_corpus(o);
    if (split == 0) {
      EXPECT_EQ(s.parts, s.documents);
      whole = read_bytes(o.output);
      EXPECT_EQ(read_tokens(o.output, 400), expected_ids(*tok, docs, true, true));
    } else {
      EXPECT_GT(s.parts, s.documents) << "split " << split;
      EXPECT_EQ(read_bytes(o.output), whole) << "split " << split;
    }
  }
}

TEST_F(TokenizeJob, LlmcOutputReadsBack) {
  const std::vector<std::string> docs = make_docs(20, 9);
  std::string text;
  for (const std::string& d : docs) text += jsonl_line("text", d);
  write_bytes(dir.file("e.jsonl"), text);
  TokenizeOptions o = options({dir.file("e.jsonl")}, dir.file("e.bin"));
  o.format = "llmc";
  const ll::TokenizeStats s = ll::tokenize_corpus(o);
  const ll::TokenFile f(o.output, 400);
  EXPECT_EQ(f.format(), ll::TokenFormat::Llmc16);
  EXPECT_EQ(f.size(), s.tokens);
  EXPECT_EQ(read_tokens(o.output, 400), expected_ids(*tok, docs, true, true));
  EXPECT_EQ(ll::read_sidecar(o.output).format, "llmc_uint16");
}

TEST_F(TokenizeJob, ClearErrors) {
  std::string e = error_of([&] { ll::tokenize_corpus(options({dir.file("nope.txt")}, dir.file("x.bin"))); });
  EXPECT_NE(e.find("input `" + dir.file("nope.txt") + "` does not exist"), std::string::npos) << e;

  write_bytes(dir.file("empty1.txt"), "");
  write_bytes(dir.file("empty2.txt"), "\n\n");
  TokenizeOptions o = options({dir.file("empty1.txt"), dir.file("empty2.txt")}, dir.file("x.bin"));
  o.one_doc_per_line = true;
  e = error_of([&] { ll::tokenize_corpus(o); });
  EXPECT_NE(e.find("the corpus is empty"), std::string::npos) << e;
  EXPECT_NE(e.find("2 empty documents skipped"), std::string::npos) << e;
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.bin")));
  EXPECT_EQ(std::distance(std::filesystem::directory_iterator(dir.path()), {}), 2) << "temporary files left behind";

  write_bytes(dir.file("ok.txt"), "kalo");
  o = options({dir.file("ok.txt")}, dir.file("x.bin"));
  o.tokenizer = dir.file("missing.model");
  e = error_of([&] { ll::tokenize_corpus(o); });
  EXPECT_NE(e.find(dir.file("missing.model")), std::string::npos) << e;
  o = options({dir.file("ok.txt")}, dir.file("x.bin"));
  o.input_format = "csv";
  EXPECT_NE(error_of([&] { ll::tokenize_corpus(o); }).find("unknown input format `csv`"), std::string::npos);
  o = options({dir.file("ok.txt")}, dir.file("x.bin"));
  o.format = "npy";
  EXPECT_NE(error_of([&] { ll::tokenize_corpus(o); }).find("unknown token file format"), std::string::npos);
  o = options({dir.file("ok.txt")}, dir.file("ok.txt"));
  EXPECT_NE(error_of([&] { ll::tokenize_corpus(o); }).find("is the output file or its sidecar"), std::string::npos);
  write_bytes(dir.file("f.jsonl"), jsonl_line("text", "x"));
  o = options({dir.file("f.jsonl")}, dir.file("x.bin"));
  o.one_doc_per_line = true;
  EXPECT_NE(error_of([&] { ll::tokenize_corpus(o); }).find("--one_doc_per_line applies to text files"),
            std::string::npos);
}

TEST_F(TokenizeJob, RerunReplacesOutputAndSidecar) {
  write_bytes(dir.file("a.txt"), "kalo mine");
  TokenizeOptions o = options({dir.file("a.txt")}, dir.file("a.bin"));
  ll::tokenize_corpus(o);
  write_bytes(dir.file("a.txt"), "ruta shipo deva zuri");
  ll::tokenize_corpus(o);
  EXPECT_EQ(read_tokens(o.output, 400), expected_ids(*tok, {"ruta shipo deva zuri"}, true, true));
  EXPECT_EQ(ll::read_sidecar(o.output).token_count,
            int64_t(expected_ids(*tok, {"ruta shipo deva zuri"}, true, true).size()));
}

TEST(TokenizeDocuments, SftRecordsFromJsonListAndJsonl) {
  TempDir dir;
  write_bytes(dir.file("a.json"), R"([{"instruction": "Q1", "output": "A1", "file": "f"},
                                      {"instruction": "Q2", "input": "I2", "output": "A2"}])");
  write_bytes(dir.file("a.jsonl"),
              "{\"instruction\": \"Q1\", \"output\": \"A1\", \"input\": null}\n\n"
              "{\"instruction\": \"Q2\", \"input\": \"I2\", \"output\": \"A2\"}\n");
  for (const std::string name : {"a.json", "a.jsonl"}) {
    std::vector<ll::SftRecord> records;
    ll::read_sft_records(dir.file(name), [&](ll::SftRecord&& r) { records.push_back(std::move(r)); });
    ASSERT_EQ(records.size(), 2u) << name;
    EXPECT_EQ(records[0].instruction, "Q1");
    EXPECT_EQ(records[0].input, "");
    EXPECT_EQ(records[0].output, "A1");
    EXPECT_EQ(records[1].input, "I2");
    EXPECT_EQ(records[1].output, "A2");
  }
  EXPECT_EQ(ll::alpaca_prompt("Q1", ""), "[INST]Q1[/INST]");
  EXPECT_EQ(ll::alpaca_document("Q2", "I2", "A2"), ll::alpaca_prompt("Q2", "I2") + "A2");
  write_bytes(dir.file("b.jsonl"), "{\"instruction\": \"Q1\"}\n");
  const std::string e = error_of([&] { ll::read_sft_records(dir.file("b.jsonl"), [](ll::SftRecord&&) {}); });
  EXPECT_NE(e.find("`" + dir.file("b.jsonl") + "` line 1 has no field \"output\""), std::string::npos) << e;
}

TEST(TokenizeJobLlama2, GoldenIdsThroughTheJob) {
  LL_REQUIRE_LLAMA2_TOKENIZER(path);
  TempDir dir;
  write_bytes(dir.file("d.jsonl"),
              jsonl_line("text", "I believe the meaning of life is") + jsonl_line("text", "Hello world"));
  TokenizeOptions o;
  o.inputs = {dir.file("d.jsonl")};
  o.output = dir.file("d.bin");
  o.tokenizer = path;
  ll::tokenize_corpus(o);
  const Ids want = {1, 306, 4658, 278, 6593, 310, 2834, 338, 2, 1, 15043, 3186, 2};
  EXPECT_EQ(read_tokens(o.output, 32000), want);
  std::string bytes;
  for (int32_t id : want) bytes += std::string{char(id & 0xff), char(id >> 8)};
  EXPECT_EQ(read_bytes(o.output), bytes);  // what np.memmap(path, dtype=np.uint16) reads
  const ll::TokenFileSidecar side = ll::read_sidecar(o.output);
  EXPECT_EQ(side.tokenizer_md5, "eeec4125e9c7560836b4873b6f8e3025");
  EXPECT_EQ(side.vocab_size, 32000);
  EXPECT_EQ(side.token_count, 13);
  EXPECT_EQ(side.document_count, 2);
}

// --- tokenizer.json files, special-token policy, invalid UTF-8, PDF ------------------------------------------

namespace {

std::string synthetic_tokenizer(const std::string& name) {
  return ll::test::fixtures_dir() + "/tokenizers/" + name + ".tokenizer.json";
}

TokenizeOptions job(const std::vector<std::string>& inputs, const std::string& output, const std::string& tokenizer) {
  TokenizeOptions o;
  o.inputs = inputs;
  o.output = output;
  o.tokenizer = tokenizer;
  return o;
}

// A one-page PDF whose text is "Hello PDF world" (xref offsets left to pdftotext's repair).
const char* kTinyPdf =
    "%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n"
    "3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 300 144]/Contents 4 0 R/Resources<</Font<</F1 5 0 R>>>>>>endobj\n"
    "4 0 obj<</Length 44>>stream\nBT /F1 18 Tf 20 80 Td (Hello PDF world) Tj ET\nendstream endobj\n"
    "5 0 obj<</Type/Font/Subtype/Type1/BaseFont/Helvetica>>endobj\n"
    "trailer<</Root 1 0 R>>\n%%EOF\n";

bool have_pdftotext() { return std::system("command -v pdftotext >/dev/null 2>&1") == 0; }

}  // namespace

TEST(TokenizeJobHf, SpecialTokenStringsStayTextUnlessAsked) {
  TempDir dir;
  const std::string tokenizer = synthetic_tokenizer("synthetic-llama2");
  write_bytes(dir.file("doc.txt"), "quoting </s> and <s> inside a document");
  TokenizeOptions o = job({dir.file("doc.txt")}, dir.file("text.bin"), tokenizer);
  ll::tokenize_corpus(o);
  const Tokenizer tok = Tokenizer::load(tokenizer);
  Ids ids = read_tokens(dir.file("text.bin"), tok.vocab_size());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.eos_id()), 1) << "only the EOS the job appends";
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos_id()), 1);
  EXPECT_FALSE(ll::read_sidecar(dir.file("text.bin")).parse_special_tokens);
  EXPECT_EQ(ll::read_sidecar(dir.file("text.bin")).tokenizer_kind, "tokenizer.json");
  o.output = dir.file("parsed.bin");
  o.parse_special_tokens = true;
  ll::tokenize_corpus(o);
  ids = read_tokens(dir.file("parsed.bin"), tok.vocab_size());
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.eos_id()), 2);
  EXPECT_EQ(std::count(ids.begin(), ids.end(), tok.bos_id()), 2);
  EXPECT_TRUE(ll::read_sidecar(dir.file("parsed.bin")).parse_special_tokens);
}

TEST(TokenizeJobHf, InvalidUtf8IsReplacedCountedAndReported) {
  TempDir dir;
  const std::string tokenizer = synthetic_tokenizer("synthetic-bytelevel");
  write_bytes(dir.file("a.txt"), "fine text");
  write_bytes(dir.file("b.jsonl"), "{\"text\": \"ok\"}\n{\"text\": \"also ok\"}\n");
  write_bytes(dir.file("c.txt"), "bad \xff\xfe bytes \xe2\x82");
  TokenizeOptions o = job({dir.file("a.txt"), dir.file("c.txt")}, dir.file("out.bin"), tokenizer);
  std::FILE* log = std::tmpfile();
  ASSERT_NE(log, nullptr);
  o.log = log;
  o.progress = false;
  o.bos = o.eos = false;  // the synthetic byte-level tokenizer has no EOS
  const ll::TokenizeStats stats = ll::tokenize_corpus(o);
  EXPECT_EQ(stats.invalid_utf8_bytes, 4);
  std::rewind(log);
  std::string logged(4096, '\0');
  logged.resize(std::fread(logged.data(), 1, logged.size(), log));
  std::fclose(log);
  EXPECT_NE(logged.find("warning: 4 bytes of invalid UTF-8 were read as U+FFFD (one per byte), the first in " +
                        dir.file("c.txt") + " (document 1)"),
            std::string::npos)
      << logged;
  EXPECT_EQ(ll::read_sidecar(dir.file("out.bin")).invalid_utf8_replaced, 4);
  const Tokenizer tok = Tokenizer::load(tokenizer);
  EXPECT_EQ(read_tokens(dir.file("out.bin"), tok.vocab_size()),
            expected_ids(tok, {"fine text", "bad \uFFFD\uFFFD bytes \uFFFD\uFFFD"}, false, false))
;
}

TEST(TokenizeJobHf, PdfInputThroughPdftotext) {
  TempDir dir;
  write_bytes(dir.file("paper.pdf"), kTinyPdf);
  write_bytes(dir.file("notes.txt"), "Plain notes");
  const std::string tokenizer = synthetic_tokenizer("synthetic-llama2");
  EXPECT_EQ(ll::resolve_input_format("auto", dir.file("paper.pdf"), false), ll::InputFormat::Pdf);
  if (!have_pdftotext()) GTEST_SKIP() << "pdftotext not installed (Debian package poppler-utils)";
  ll::tokenize_corpus(job({dir.path()}, dir.file("out/tokens.bin"), tokenizer));
  const Tokenizer tok = Tokenizer::load(tokenizer);
  EXPECT_EQ(read_tokens(dir.file("out/tokens.bin"), tok.vocab_size()),
            expected_ids(tok, {"Plain notes", "Hello PDF world"}, true, true))
      << "notes.txt, then paper.pdf (sorted)";
  EXPECT_EQ(ll::read_sidecar(dir.file("out/tokens.bin")).input_format, "pdf,text");
}

TEST(TokenizeJobHf, PdfErrorsSayWhatIsMissing) {
  TempDir dir;
  write_bytes(dir.file("paper.pdf"), kTinyPdf);
  write_bytes(dir.file("broken.pdf"), "%PDF-1.4 nothing else");
  const std::string tokenizer = synthetic_tokenizer("synthetic-llama2");
  if (have_pdftotext()) {
    const std::string e = error_of([&] { ll::tokenize_corpus(job({dir.file("broken.pdf")}, dir.file("x.bin"), tokenizer)); });
    EXPECT_NE(e.find("broken.pdf"), std::string::npos) << e;
  }
  const char* old_path = std::getenv("PATH");
  const std::string saved = old_path ? old_path : "";
  ::setenv("PATH", dir.path().c_str(), 1);  // no pdftotext there
  const std::string e = error_of([&] { ll::tokenize_corpus(job({dir.file("paper.pdf")}, dir.file("x.bin"), tokenizer)); });
  ::setenv("PATH", saved.c_str(), 1);
  EXPECT_NE(e.find("reading it needs `pdftotext`, which is not installed (Debian package poppler-utils"),
            std::string::npos)
      << e;
  EXPECT_FALSE(std::filesystem::exists(dir.file("x.bin")));
}

TEST(TokenizeJobHf, Llama3WritesUint32AndRawIsRefused) {
  const std::string folder = ll::test::asset_path("tokenizers/llama3/tokenizer.json");
  if (folder.empty()) GTEST_SKIP() << "tokenizers/llama3 not found in $LONGLORA_ASSETS or ../shared/assets";
  TempDir dir;
  const std::vector<std::string> docs = make_docs(40, 7);
  std::string lines;
  for (const std::string& d : docs) lines += jsonl_line("text", d);
  write_bytes(dir.file("docs.jsonl"), lines);
  const std::string tokenizer = folder.substr(0, folder.rfind('/'));  // the model folder
  ll::tokenize_corpus(job({dir.file("docs.jsonl")}, dir.file("out.bin"), tokenizer));
  const ll::TokenFileSidecar side = ll::read_sidecar(dir.file("out.bin"));
  EXPECT_EQ(side.format, "llmc_uint32");
  EXPECT_EQ(side.vocab_size, 128256);
  EXPECT_EQ(side.bos_id, 128000);
  EXPECT_EQ(side.eos_id, 128001);
  const Tokenizer tok = Tokenizer::load(tokenizer);
  EXPECT_EQ(read_tokens(dir.file("out.bin"), 128256), expected_ids(tok, docs, true, true));
  TokenizeOptions raw = job({dir.file("docs.jsonl")}, dir.file("raw.bin"), tokenizer);
  raw.format = "raw";
  const std::string e = error_of([&] { ll::tokenize_corpus(raw); });
  EXPECT_NE(e.find("ids from 65536 up do not fit the 16 bits of a raw_uint16 token file; use --format llmc"),
            std::string::npos)
      << e;
}

// Long documents cut for parallel encoding, one or two threads: the same bytes (Qwen2.5's tokenizer.json).
TEST(TokenizeJobHf, SameBytesForAnyThreadsAndCuts) {
  const std::string path = ll::test::asset_path("tokenizers/qwen2.5/tokenizer.json");
  if (path.empty()) GTEST_SKIP() << "tokenizers/qwen2.5 not found in $LONGLORA_ASSETS or ../shared/assets";
  TempDir dir;
  std::string book;
  for (const std::string& d : make_docs(400, 3)) book += d + (book.size() % 3 ? "\nNext " : " And ");
  write_bytes(dir.file("book.txt"), book);
  std::string reference;
  for (int threads : {1, 2})
    for (int64_t split : {int64_t(0), int64_t(512)}) {
      TokenizeOptions o = job({dir.file("book.txt")}, dir.file("out.bin"), path);
      o.threads = threads, o.split_bytes = split, o.bos = false;
      const ll::TokenizeStats stats = ll::tokenize_corpus(o);
      if (split > 0) EXPECT_GT(stats.parts, 10);
      const std::string bytes = read_bytes(dir.file("out.bin"));
      if (reference.empty()) reference = bytes;
      EXPECT_EQ(bytes, reference) << threads << " threads, split " << split;
    }
}
