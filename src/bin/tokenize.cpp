// build/tokenize: text, JSONL, LongAlpaca JSON or PDF → a token file (LongLoRA's raw uint16, or llm.c's headered
// format) plus a sidecar OUT.json. The work is in src/data/tokenize_job.h; this parses flags.
#include <cstdio>
#include <sstream>
#include <string>

#include "data/tokenize_job.h"
#include "util/error.h"
#include "util/flags.h"

int main(int argc, char** argv) {
  ll::TokenizeOptions o;
  std::string inputs;
  int64_t batch_mb = o.batch_bytes >> 20;
  int64_t split_kb = o.split_bytes >> 10;
  ll::Flags flags(
      "tokenize",
      "Tokenizes a corpus with a Hugging Face tokenizer.json or a sentencepiece tokenizer.model into a token file\n"
      "plus a sidecar <output>.json. Each document becomes BOS + tokens + EOS (ids, never text). Output bytes do not\n"
      "depend on --threads.\n"
      "Example: tokenize --tokenizer Llama-2-7b-hf/tokenizer.model --input books/ --output pg19_train.bin");
  flags.add("input", &inputs,
            "comma-separated input files or directories (a directory means every non-hidden file inside, "
            "recursively, in sorted order)");
  flags.add("output", &o.output, "token file to write (its sidecar is <output>.json)");
  flags.add("tokenizer", &o.tokenizer,
            "tokenizer.json (GPT-NeoX, Llama-3, Qwen2, Mistral: ids identical to the tokenizers library) or "
            "sentencepiece tokenizer.model (Llama-2's), or a model folder holding one (tokenizer.json preferred)");
  flags.add("parse_special_tokens", &o.parse_special_tokens,
            "literal special-token strings in the text (\"<|endoftext|>\", \"</s>\") become their ids, as the "
            "tokenizers library does by default; false (default): they are text, as sentencepiece and tiktoken "
            "treat them");
  flags.add("input_format", &o.input_format,
            "auto | text | lines | jsonl | alpaca_json | pdf. auto picks by extension: .jsonl → jsonl, .json → "
            "alpaca_json, .pdf (or %PDF- content) → pdf, anything else → text (one document per file). "
            "alpaca_json: LongAlpaca records as one JSON list (or one object per line in a .jsonl file). pdf: one "
            "document per file, its text through pdftotext (Debian's poppler-utils; no OCR)");
  flags.add("one_doc_per_line", &o.one_doc_per_line,
            "text files hold one document per line (same as --input_format lines)");
  flags.add("text_field", &o.text_field, "JSONL field holding each document's text");
  flags.add("bos", &o.bos, "start each document with the BOS id");
  flags.add("eos", &o.eos, "end each document with the EOS id");
  flags.add("format", &o.format,
            "auto: raw when every id fits in 16 bits, else llmc uint32; raw: little-endian uint16, no header "
            "(LongLoRA's pg19/*.bin; an error for vocabularies over 65536); llmc: llm.c header (magic 20240520 "
            "uint16, or 20240801 uint32 for vocabularies over 65536)");
  flags.add("threads", &o.threads, "tokenizer threads (0 = every hardware thread)").at_least(0);
  // The bounds keep batch_mb << 20 and split_kb << 10 far from overflowing (1 TiB each).
  flags.add("batch_mb", &batch_mb, "MB of document text per batch; about 3 batches are in memory at once")
      .at_least(1)
      .at_most(1 << 20);
  flags.add("split_kb", &split_kb,
            "encode documents longer than this many KB in parts, in parallel; exact, so only done for tokenizers "
            "where cutting provably changes no id (Llama-2's, and the GPT-NeoX, Llama-3, Qwen2 and Mistral "
            "tokenizer.json files); 0 = every document whole")
      .at_least(0)
      .at_most(1 << 30);
  flags.add("progress", &o.progress, "progress line on stderr (a final summary line is always printed)");
  try {
    if (!flags.parse(argc, argv)) return 0;
    LL_CHECK(!inputs.empty(), "--input is required (see --help)");
    LL_CHECK(!o.output.empty(), "--output is required (see --help)");
    LL_CHECK(!o.tokenizer.empty(), "--tokenizer is required (see --help)");
    std::stringstream ss(inputs);
    for (std::string item; std::getline(ss, item, ',');) o.inputs.push_back(item);
    o.batch_bytes = batch_mb << 20;
    o.split_bytes = split_kb << 10;
    o.log = stderr;
    ll::tokenize_corpus(o);
    return 0;
  } catch (const std::exception& e) {
    std::string message = ll::exception_message(e);
    if (message.rfind("tokenize: ", 0) == 0) message.erase(0, 10);  // Flags' messages already name the program
    std::fprintf(stderr, "tokenize: error: %s\n", message.c_str());
    return 1;
  }
}
