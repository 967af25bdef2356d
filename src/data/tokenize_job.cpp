#include "data/tokenize_job.h"

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <mutex>
#include <optional>
#include <set>
#include <string_view>
#include <thread>
#include <utility>

#include "data/documents.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "data/utf8.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

struct Batch {
  std::vector<std::string> docs;
  int64_t bytes = 0;
};

struct Cancelled {};  // thrown inside the reader thread to unwind it when the consumer gave up

// One-slot hand-over between the reader thread and the tokenizing thread.
class BatchQueue {
 public:
  void push(Batch&& b) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return !slot_ || cancelled_; });
    if (cancelled_) throw Cancelled{};
    slot_ = std::move(b);
    cv_.notify_all();
  }
  // False at the end of the input; rethrows the reader's error.
  bool pop(Batch* out) {
    std::unique_lock<std::mutex> lock(m_);
    cv_.wait(lock, [&] { return slot_ || closed_; });
    if (slot_) {
      *out = std::move(*slot_);
      slot_.reset();
      cv_.notify_all();
      return true;
    }
    if (error_) std::rethrow_exception(error_);
    return false;
  }
  void close(std::exception_ptr error) {
    std::lock_guard<std::mutex> lock(m_);
    closed_ = true;
    error_ = error;
    cv_.notify_all();
  }
  void cancel() {
    std::lock_guard<std::mutex> lock(m_);
    cancelled_ = true;
    cv_.notify_all();
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  std::optional<Batch> slot_;
  bool closed_ = false, cancelled_ = false;
  std::exception_ptr error_;
};

// "12.3k", "4.56M": compact counts for the progress line.
std::string human(double v) {
  char buf[32];
  if (v >= 1e9)
    std::snprintf(buf, sizeof buf, "%.2fG", v / 1e9);
  else if (v >= 1e6)
    std::snprintf(buf, sizeof buf, "%.2fM", v / 1e6);
  else if (v >= 1e3)
    std::snprintf(buf, sizeof buf, "%.1fk", v / 1e3);
  else
    std::snprintf(buf, sizeof buf, "%.0f", v);
  return buf;
}

// Progress on a terminal is one line redrawn with \r; elsewhere (logs, pipes) a plain line once a minute.
class Progress {
 public:
  Progress(std::FILE* log, bool updates)
      : log_(log), updates_(updates), tty_(log && ::isatty(::fileno(log))), start_(Clock::now()) {}
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - start_).count(); }
  void update(const TokenizeStats& s) {
    if (!log_ || !updates_) return;
    const double t = elapsed();
    if (t - last_ < (tty_ ? 0.2 : 60.0)) return;
    last_ = t;
    std::fprintf(log_, "%stokenize: %s%s", tty_ ? "\r" : "", line(s, t).c_str(), tty_ ? "\x1b[K" : "\n");
    std::fflush(log_);
  }
  void finish(const TokenizeStats& s, const std::string& output, const char* format) {
    if (!log_) return;
    std::fprintf(log_, "%stokenize: done: %s -> %s (%s; %lld empty documents skipped)\n", tty_ ? "\r\x1b[K" : "",
                 line(s, s.seconds).c_str(), output.c_str(), format, (long long)s.empty_documents);
    std::fflush(log_);
  }

 private:
  static std::string line(const TokenizeStats& s, double t) {
    const double dt = std::max(t, 1e-9);
    char rates[96];
    std::snprintf(rates, sizeof rates, "%.1f MB/s, %.2f s", double(s.text_bytes) / dt / 1e6, t);
    return str_cat(s.documents, " documents, ", human(double(s.tokens)), " tokens, ", human(double(s.tokens) / dt),
                   " tokens/s, ", rates);
  }
  std::FILE* log_;
  bool updates_, tty_;
  Clock::time_point start_;
  double last_ = 0;
};

// What the reader thread saw besides the documents (read after it is joined).
struct ReaderCounts {
  int64_t empty_documents = 0;
  int64_t invalid_utf8_bytes = 0;
  std::string first_invalid;  // "file (document N)"
};

// The reader thread: whole documents into batches of about batch_bytes, handed over in input order.
// Empty documents are skipped and counted; invalid UTF-8 bytes become U+FFFD (counted). Errors (and cancellation)
// end the queue.
void read_batches(const std::vector<std::string>& files, const std::vector<InputFormat>& formats,
                  const TokenizeOptions& o, BatchQueue& queue, ReaderCounts* counts) {
  try {
    Batch batch;
    std::string repaired;
    for (size_t i = 0; i < files.size(); ++i) {
      int64_t in_file = 0;
      read_documents(files[i], formats[i], o.text_field, [&](std::string&& doc) {
        ++in_file;
        if (doc.empty()) {
          ++counts->empty_documents;
          return;
        }
        if (!is_valid_utf8(doc)) {
          const size_t n = replace_invalid_utf8(doc, &repaired);
          if (counts->invalid_utf8_bytes == 0) counts->first_invalid = str_cat(files[i], " (document ", in_file, ")");
          counts->invalid_utf8_bytes += int64_t(n);
          doc.swap(repaired);
        }
        batch.bytes += int64_t(doc.size());
        batch.docs.push_back(std::move(doc));
        if (batch.bytes >= o.batch_bytes) queue.push(std::exchange(batch, Batch{}));
      });
    }
    if (!batch.docs.empty()) queue.push(std::move(batch));
    queue.close(nullptr);
  } catch (const Cancelled&) {
    queue.close(nullptr);
  } catch (...) {
    queue.close(std::current_exception());
  }
}

TokenFileSidecar describe(const TokenizeOptions& o, const Tokenizer& tok, TokenFormat format,
                          const TokenizeStats& stats, const std::vector<std::string>& files,
                          const std::set<std::string>& format_names) {
  TokenFileSidecar side;
  side.format = token_format_name(format);
  side.token_count = stats.tokens;
  side.document_count = stats.documents;
  side.empty_documents_skipped = stats.empty_documents;
  side.bos = o.bos, side.eos = o.eos;
  side.bos_id = tok.bos_id(), side.eos_id = tok.eos_id();
  side.tokenizer_path = fs::absolute(tok.path()).lexically_normal().string();  // the file, also when given a folder
  side.tokenizer_md5 = tok.md5();
  side.tokenizer_kind = tok.kind();
  side.parse_special_tokens = o.parse_special_tokens;
  side.invalid_utf8_replaced = stats.invalid_utf8_bytes;
  side.vocab_size = tok.vocab_size();
  for (const std::string& name : format_names) side.input_format += (side.input_format.empty() ? "" : ",") + name;
  side.text_field = format_names.count("jsonl") ? o.text_field : "";
  side.inputs = files;
  return side;
}

}  // namespace

std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs) {
  std::vector<std::string> files;
  for (const std::string& in : inputs) {
    LL_CHECK(!in.empty(), "an input path is empty (check the commas in --input)");
    LL_CHECK(path_exists(in), "input `", in, "` does not exist");
    if (!is_directory(in)) {
      files.push_back(in);
      continue;
    }
    std::vector<std::string> inside;
    for (const auto& e : fs::recursive_directory_iterator(in)) {
      const std::string name = e.path().filename().string();
      if (e.is_regular_file() && !name.empty() && name[0] != '.') inside.push_back(e.path().string());
    }
    LL_CHECK(!inside.empty(), "input directory `", in, "` contains no files");
    std::sort(inside.begin(), inside.end());
    files.insert(files.end(), inside.begin(), inside.end());
  }
  LL_CHECK(!files.empty(), "no inputs given");
  return files;
}

TokenizeStats tokenize_corpus(const TokenizeOptions& o) {
  LL_CHECK(!o.output.empty(), "no output file given");
  LL_CHECK(!o.tokenizer.empty(), "no tokenizer given (a tokenizer.json, or a sentencepiece tokenizer.model such as "
                                 "Llama-2's, or a model folder holding one)");
  LL_CHECK(o.batch_bytes > 0, "the batch size must be positive, got ", o.batch_bytes, " bytes");
  const std::vector<std::string> files = expand_inputs(o.inputs);
  std::vector<InputFormat> formats;
  std::set<std::string> format_names;
  for (const std::string& f : files) {
    LL_CHECK(fs::absolute(f) != fs::absolute(o.output) && fs::absolute(f) != fs::absolute(sidecar_path(o.output)),
             "input `", f, "` is the output file or its sidecar (write the output outside the input directories)");
    formats.push_back(resolve_input_format(o.input_format, f, o.one_doc_per_line));
    format_names.insert(input_format_name(formats.back()));
  }
  TokenizerOptions tok_options;
  tok_options.parse_special_tokens = o.parse_special_tokens;
  const Tokenizer tok = Tokenizer::load(o.tokenizer, tok_options);
  const TokenFormat format = parse_token_format(o.format, tok.vocab_size());
  LL_CHECK(format == TokenFormat::Llmc32 || tok.vocab_size() <= 65536, "tokenizer `", o.tokenizer, "` has ",
           tok.vocab_size(), " ids, and ids from 65536 up do not fit the 16 bits of a ", token_format_name(format),
           " token file; use --format llmc (llm.c's uint32 file) or auto");
  LL_CHECK(!o.bos || tok.bos_id() >= 0, "tokenizer `", o.tokenizer, "` has no BOS token; pass --bos false");
  LL_CHECK(!o.eos || tok.eos_id() >= 0, "tokenizer `", o.tokenizer, "` has no EOS token; pass --eos false");
  const int threads = o.threads > 0 ? int(o.threads) : int(std::max(1u, std::thread::hardware_concurrency()));
  if (const fs::path parent = fs::path(o.output).parent_path(); !parent.empty()) make_directories(parent.string());

  TokenizeStats stats;
  Progress progress(o.log, o.progress);
  TokenFileWriter writer(o.output, format);

  BatchQueue queue;
  ReaderCounts counts;  // the reader's; read after join
  std::thread reader([&] { read_batches(files, formats, o, queue, &counts); });

  try {
    const int32_t bos = tok.bos_id(), eos = tok.eos_id();
    Batch batch;
    std::vector<std::string_view> parts;  // every document's parts, in order
    std::vector<size_t> first_part;       // document d is parts [first_part[d], first_part[d + 1])
    std::vector<char> is_first;           // parts[i] begins its document
    std::vector<std::vector<int32_t>> ids;
    std::vector<std::string> errors;
    while (queue.pop(&batch)) {
      const int64_t n = int64_t(batch.docs.size());
      parts.clear();
      first_part.clear();
      is_first.clear();
      for (const std::string& doc : batch.docs) {
        first_part.push_back(parts.size());
        if (o.split_bytes > 0) {
          for (std::string_view part : tok.split_for_encoding(doc, size_t(o.split_bytes))) parts.push_back(part);
        } else {
          parts.push_back(doc);
        }
        is_first.resize(parts.size(), 0);
        is_first[first_part.back()] = 1;
      }
      first_part.push_back(parts.size());
      const int64_t m = int64_t(parts.size());
      ids.assign(size_t(m), {});
      errors.assign(size_t(m), {});
#pragma omp parallel for schedule(dynamic, 1) num_threads(threads)
      for (int64_t i = 0; i < m; ++i) {
        try {  // exceptions must not leave an OpenMP region
          tok.encode_part(parts[size_t(i)], is_first[size_t(i)] != 0, &ids[size_t(i)]);
        } catch (const std::exception& e) {
          errors[size_t(i)] = e.what();
        }
      }
      // Write in input order: this is what makes the output independent of the thread count.
      for (int64_t d = 0; d < n; ++d) {
        if (o.bos) writer.append(&bos, 1);
        for (size_t i = first_part[size_t(d)]; i < first_part[size_t(d) + 1]; ++i) {
          if (!errors[i].empty()) fail(errors[i]);
          writer.append(ids[i]);
        }
        if (o.eos) writer.append(&eos, 1);
        stats.largest_document = std::max(stats.largest_document, int64_t(batch.docs[size_t(d)].size()));
      }
      stats.parts += m;
      stats.documents += n;
      stats.text_bytes += batch.bytes;
      stats.tokens = writer.count();
      stats.batches += 1;
      stats.peak_batch_bytes = std::max(stats.peak_batch_bytes, batch.bytes);
      progress.update(stats);
    }
  } catch (...) {
    queue.cancel();
    reader.join();
    throw;  // `writer` removes its temporary file
  }
  reader.join();
  stats.empty_documents = counts.empty_documents;
  stats.invalid_utf8_bytes = counts.invalid_utf8_bytes;
  LL_CHECK(stats.documents > 0, "the corpus is empty: no non-empty document in ", files.size(), " input file(s)",
           counts.empty_documents ? str_cat(" (", counts.empty_documents, " empty documents skipped)") : std::string());
  if (stats.invalid_utf8_bytes > 0 && o.log)
    std::fprintf(o.log, "tokenize: warning: %lld bytes of invalid UTF-8 were read as U+FFFD (one per byte), the first "
                 "in %s\n", (long long)stats.invalid_utf8_bytes, counts.first_invalid.c_str());

  // Drop a stale sidecar first so the new token file is never paired with an old description.
  ::unlink(sidecar_path(o.output).c_str());
  writer.finish();
  write_sidecar(o.output, describe(o, tok, format, stats, files, format_names));
  stats.seconds = progress.elapsed();
  progress.finish(stats, o.output, token_format_name(format));
  return stats;
}

}  // namespace ll
