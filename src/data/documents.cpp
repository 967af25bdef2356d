#include "data/documents.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "data/pdf_text.h"
#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ll {

namespace {

using json = nlohmann::json;

const char* kLlama2System =
    "You are a helpful, respectful and honest assistant. Always answer as helpfully as possible, while being safe.  "
    "Your answers should not include any harmful, unethical, racist, sexist, toxic, dangerous, or illegal content. "
    "Please ensure that your responses are socially unbiased and positive in nature.\n\n"
    "If a question does not make any sense, or is not factually coherent, explain why instead of answering something "
    "not correct. If you don't know the answer to a question, please don't share false information.";

std::ifstream open_input(const std::string& path) {
  require_regular_file(path);  // a FIFO would block here, /dev/zero would be read forever
  std::ifstream in(path, std::ios::binary);
  LL_CHECK(in.good(), "cannot open input `", path, "`: ", std::strerror(errno));
  return in;
}

void read_lines(const std::string& path, bool jsonl, const std::string& field, const DocumentSink& emit) {
  std::ifstream in = open_input(path);
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (!jsonl) {
      emit(std::move(line));
      continue;
    }
    if (line.find_first_not_of(" \t") == std::string::npos) continue;  // blank lines separate nothing
    json record;
    try {
      record = json::parse(line);
    } catch (const json::parse_error& e) {
      fail("`", path, "` line ", number, " is not valid JSON: ", e.what());
    }
    LL_CHECK(record.is_object(), "`", path, "` line ", number, " is a JSON ", record.type_name(),
             ", expected an object with a string field \"", field, "\"");
    const auto it = record.find(field);
    LL_CHECK(it != record.end(), "`", path, "` line ", number, " has no field \"", field,
             "\" (choose the field with --text_field)");
    LL_CHECK(it->is_string(), "`", path, "` line ", number, ": field \"", field, "\" is a ", it->type_name(),
             ", expected a string");
    emit(std::move(it->get_ref<std::string&>()));
  }
  LL_CHECK(!in.bad(), "reading `", path, "` failed: ", std::strerror(errno));
}

// SAX handler for the LongAlpaca list: keeps only the current record's three strings, whatever the file size.
class AlpacaSax : public nlohmann::json_sax<json> {
 public:
  AlpacaSax(const std::string& path, const std::function<void(SftRecord&&)>& emit) : path_(path), emit_(emit) {}

  bool null() override { return value("null"); }
  bool boolean(bool) override { return value("boolean"); }
  bool number_integer(number_integer_t) override { return value("number"); }
  bool number_unsigned(number_unsigned_t) override { return value("number"); }
  bool number_float(number_float_t, const string_t&) override { return value("number"); }
  bool binary(binary_t&) override { return value("binary"); }
  bool string(string_t& s) override {
    if (depth_ == 2) {
      if (key_ == "instruction")
        record_.instruction = std::move(s), has_instruction_ = true;
      else if (key_ == "output")
        record_.output = std::move(s), has_output_ = true;
      else if (key_ == "input")
        record_.input = std::move(s);
      return true;
    }
    return value("string");
  }
  bool start_object(std::size_t) override {
    if (depth_ == 1) {
      ++index_;
      record_ = SftRecord{};
      has_instruction_ = has_output_ = false;
    } else if (depth_ != 0) {
      value("object");
    } else {
      fail(where(), "the file is a JSON object; expected a list of {\"instruction\", \"output\"} objects (LongAlpaca)");
    }
    ++depth_;
    return true;
  }
  bool key(string_t& k) override {
    if (depth_ == 2) key_ = k;
    return true;
  }
  bool end_object() override {
    if (--depth_ == 1) {
      LL_CHECK(has_instruction_ && has_output_, where(), "record ", index_, " lacks ",
               has_instruction_ ? "\"output\"" : "\"instruction\"");
      emit_(std::move(record_));
    }
    return true;
  }
  bool start_array(std::size_t) override {
    if (depth_ != 0) value("array");
    ++depth_;
    return true;
  }
  bool end_array() override {
    --depth_;
    return true;
  }
  bool parse_error(std::size_t position, const std::string&, const nlohmann::detail::exception& e) override {
    fail(where(), "invalid JSON at byte ", position, ": ", e.what());
  }

 private:
  std::string where() const { return str_cat("LongAlpaca file `", path_, "`: "); }
  // A non-string value (or a container) where `depth_` says what it means.
  bool value(const char* type) {
    if (depth_ == 0) fail(where(), "the file is a JSON ", type, "; expected a list of objects");
    if (depth_ == 1) fail(where(), "element ", index_ + 1, " is a JSON ", type, ", expected an object");
    if (depth_ == 2) {
      const bool ours = key_ == "instruction" || key_ == "output" || key_ == "input";
      // A null "input" means no input, as an absent one does; other fields (e.g. "file") are ignored.
      if (ours && !(key_ == "input" && std::string(type) == "null"))
        fail(where(), "record ", index_, ": \"", key_, "\" is a JSON ", type, ", expected a string");
    }
    return true;
  }

  const std::string& path_;
  const std::function<void(SftRecord&&)>& emit_;
  int depth_ = 0;
  int64_t index_ = 0;  // 1-based number of the current record
  std::string key_;
  SftRecord record_;
  bool has_instruction_ = false, has_output_ = false;
};

// A field of a JSONL record that must be a string (or, when `optional`, absent or null → "").
std::string string_field(json& record, const char* name, bool optional, const std::string& path, int64_t line) {
  const auto it = record.find(name);
  if (optional && (it == record.end() || it->is_null())) return "";
  LL_CHECK(it != record.end(), "`", path, "` line ", line, " has no field \"", name, "\"");
  LL_CHECK(it->is_string(), "`", path, "` line ", line, ": field \"", name, "\" is a ", it->type_name(),
           ", expected a string");
  return std::move(it->get_ref<std::string&>());
}

void read_sft_jsonl(const std::string& path, const std::function<void(SftRecord&&)>& emit) {
  std::ifstream in = open_input(path);
  std::string line;
  for (int64_t number = 1; std::getline(in, line); ++number) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    json record;
    try {
      record = json::parse(line);
    } catch (const json::parse_error& e) {
      fail("`", path, "` line ", number, " is not valid JSON: ", e.what());
    }
    LL_CHECK(record.is_object(), "`", path, "` line ", number, " is a JSON ", record.type_name(),
             ", expected an object");
    SftRecord r;
    r.instruction = string_field(record, "instruction", false, path, number);
    r.output = string_field(record, "output", false, path, number);
    r.input = string_field(record, "input", true, path, number);
    emit(std::move(r));
  }
  LL_CHECK(!in.bad(), "reading `", path, "` failed: ", std::strerror(errno));
}

}  // namespace

const char* input_format_name(InputFormat f) {
  switch (f) {
    case InputFormat::Text:
      return "text";
    case InputFormat::Lines:
      return "lines";
    case InputFormat::Jsonl:
      return "jsonl";
    case InputFormat::AlpacaJson:
      return "alpaca_json";
    case InputFormat::Pdf:
      return "pdf";
  }
  return "?";
}

InputFormat resolve_input_format(const std::string& name, const std::string& path, bool one_doc_per_line) {
  InputFormat f;
  if (name == "auto") {
    f = ends_with(path, ".jsonl")  ? InputFormat::Jsonl
        : ends_with(path, ".json") ? InputFormat::AlpacaJson
        : is_pdf_file(path)        ? InputFormat::Pdf
                                   : InputFormat::Text;
  } else if (name == "text") {
    f = InputFormat::Text;
  } else if (name == "lines") {
    f = InputFormat::Lines;
  } else if (name == "jsonl") {
    f = InputFormat::Jsonl;
  } else if (name == "alpaca_json") {
    f = InputFormat::AlpacaJson;
  } else if (name == "pdf") {
    f = InputFormat::Pdf;
  } else {
    fail("unknown input format `", name, "`; expected auto, text, lines, jsonl, alpaca_json or pdf");
  }
  if (one_doc_per_line) {
    LL_CHECK(f == InputFormat::Text || f == InputFormat::Lines, "--one_doc_per_line applies to text files, but `", path,
             "` is read as ", input_format_name(f));
    f = InputFormat::Lines;
  }
  return f;
}

std::string alpaca_prompt(const std::string& instruction, const std::string& input) {
  if (input.empty()) return "[INST]" + instruction + "[/INST]";
  return str_cat("[INST] <<SYS>>\n", kLlama2System, "\n<</SYS>> \n\n ", instruction, " \n", input, " [/INST]");
}

std::string alpaca_document(const std::string& instruction, const std::string& input, const std::string& output) {
  return alpaca_prompt(instruction, input) + output;
}

void read_sft_records(const std::string& path, const std::function<void(SftRecord&&)>& emit) {
  if (ends_with(path, ".jsonl")) return read_sft_jsonl(path, emit);
  std::ifstream in = open_input(path);
  AlpacaSax sax(path, emit);
  json::sax_parse(in, &sax);
}

void read_documents(const std::string& path, InputFormat format, const std::string& text_field,
                    const DocumentSink& emit) {
  switch (format) {
    case InputFormat::Text:
      emit(read_text_file(path, kNoSizeLimit));  // one document: a whole book may be large
      return;
    case InputFormat::Lines:
      read_lines(path, false, text_field, emit);
      return;
    case InputFormat::Jsonl:
      read_lines(path, true, text_field, emit);
      return;
    case InputFormat::AlpacaJson:
      read_sft_records(path, [&](SftRecord&& r) { emit(alpaca_document(r.instruction, r.input, r.output)); });
      return;
    case InputFormat::Pdf:
      emit(pdf_to_text(path));
      return;
  }
}

}  // namespace ll
