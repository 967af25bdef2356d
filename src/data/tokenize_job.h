// The tokenization job behind build/tokenize: documents → [BOS] + ids + [EOS] → token file + sidecar.
//
// Pipeline: one reader thread fills batches of whole documents (about `batch_bytes` of text each) and hands
// them over through a one-slot queue; the calling thread tokenizes each batch with `threads` OpenMP threads
// (long documents cut into parts, see split_bytes) and writes the documents in input order, so the output
// bytes do not depend on the thread count. Text in memory is bounded by about 3 batches (filling, queued,
// tokenizing) plus the current batch's ids — never the corpus; a single document is always read whole.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

namespace ll {

struct TokenizeOptions {
  std::vector<std::string> inputs;  // files, or directories (every regular non-hidden file inside, recursively, sorted)
  std::string output;               // the token file; the sidecar goes to output + ".json"
  std::string tokenizer;            // tokenizer.json or sentencepiece tokenizer.model, or a model folder
  bool parse_special_tokens = false;  // literal special-token strings in documents become their ids (else text)
  std::string input_format = "auto";  // auto | text | lines | jsonl | alpaca_json (see documents.h)
  bool one_doc_per_line = false;
  std::string text_field = "text";  // JSONL field holding the document
  bool bos = true, eos = true;      // each document is [BOS] + ids + [EOS]
  // auto: raw uint16 (LongLoRA's) when every id fits in 16 bits, else llmc uint32; raw | llmc (see token_file.h)
  std::string format = "auto";
  int64_t threads = 0;              // <= 0: every hardware thread
  int64_t batch_bytes = 8 << 20;    // text per batch
  // Documents longer than this are encoded in parts of about this size, in parallel, when the tokenizer
  // allows it exactly (Tokenizer::can_split; Llama-2's does); 0 encodes every document whole.
  int64_t split_bytes = 8 << 10;
  std::FILE* log = nullptr;  // the final summary line (stderr in build/tokenize); nullptr = silent
  bool progress = true;      // also a progress line on `log` (redrawn on a terminal, once a minute otherwise)
};

struct TokenizeStats {
  int64_t documents = 0, empty_documents = 0, tokens = 0;
  int64_t text_bytes = 0;  // bytes of document text tokenized
  int64_t batches = 0;
  int64_t parts = 0;             // pieces of text handed to the tokenizer (documents, or their parts)
  int64_t invalid_utf8_bytes = 0;  // invalid UTF-8 bytes in the documents, each read as U+FFFD
  int64_t peak_batch_bytes = 0;  // largest batch of text handed to the tokenizer threads
  int64_t largest_document = 0;  // bytes
  double seconds = 0;
};

// Runs the job; throws ll::Error (and leaves no output file behind) on a missing input, bad input, an empty
// corpus, or a token id that does not fit the output format. Invalid UTF-8 in a document is not an error: each
// invalid byte is read as U+FFFD (what sentencepiece does), counted, reported on `log` (with the first place it was
// seen) and recorded in the sidecar.
TokenizeStats tokenize_corpus(const TokenizeOptions& options);

// `inputs` with directories expanded; throws naming a path that does not exist.
std::vector<std::string> expand_inputs(const std::vector<std::string>& inputs);

}  // namespace ll
