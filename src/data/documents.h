// Streaming document readers for the tokenization job. Each reads its file incrementally — a line or one
// JSON record at a time — and hands documents over one by one, so a corpus is never held whole in memory.
// (A plain-text file is one document and is read whole.)
#pragma once
#include <functional>
#include <string>

namespace ll {

enum class InputFormat {
  Text,        // the whole file is one document
  Lines,       // one document per line ('\n'; a trailing '\r' is dropped)
  Jsonl,       // one JSON object per line; the document is the string field `text_field`
  AlpacaJson,  // LongAlpaca: {"instruction", "output"[, "input"]} objects in one JSON list (.jsonl: one per line)
  Pdf,         // the whole PDF is one document, its text through pdftotext (data/pdf_text.h)
};

const char* input_format_name(InputFormat f);  // "text", "lines", "jsonl", "alpaca_json", "pdf"
// "auto" picks by extension: .jsonl → jsonl, .json → alpaca_json, .pdf (or a file starting with "%PDF-") → pdf,
// anything else → text (lines when one_doc_per_line). Explicit names are taken as given (text + one_doc_per_line
// → lines).
InputFormat resolve_input_format(const std::string& name, const std::string& path, bool one_doc_per_line);

// One LongAlpaca example. `input` is "" when the record has none (absent or null).
struct SftRecord {
  std::string instruction, input, output;
};

// LongLoRA's SFT prompt (supervised-fine-tune.py, since 2023-11-19; longlora.md §3.2):
//   no input:   "[INST]{instruction}[/INST]"
//   with input: "[INST] <<SYS>>\n{Llama-2 system prompt}\n<</SYS>> \n\n {instruction} \n{input} [/INST]"
std::string alpaca_prompt(const std::string& instruction, const std::string& input);
// The document the tokenization job writes: prompt + output. LongLoRA appends the string "</s>" to the
// output; here EOS is added by id instead.
std::string alpaca_document(const std::string& instruction, const std::string& input, const std::string& output);

// Calls `emit` per example of a LongAlpaca file, in file order: a .jsonl file holds one object per line, any
// other file one JSON list of objects (streamed; only the current record is in memory). "instruction" and
// "output" must be strings; other fields (e.g. "file") are ignored. Errors name the file and line or record.
void read_sft_records(const std::string& path, const std::function<void(SftRecord&&)>& emit);

// Calls `emit` once per document of `path`, in file order. Empty documents are passed on too (the caller
// decides). Throws ll::Error naming the file and line (or record) for unreadable input, a JSONL line that is
// not a JSON object or lacks the string field, or a malformed LongAlpaca list. `emit` may throw to stop early.
using DocumentSink = std::function<void(std::string&& document)>;
void read_documents(const std::string& path, InputFormat format, const std::string& text_field,
                    const DocumentSink& emit);

}  // namespace ll
