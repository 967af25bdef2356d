#include "data/tokenizer_path.h"

#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ll {

namespace {
const char* const kTokenizerFiles[] = {"tokenizer.json", "tokenizer.model"};  // looked for in this order
}  // namespace

std::string resolve_tokenizer_path(const std::string& flag_value) {
  if (!path_exists(flag_value))
    fail("tokenizer `", flag_value, "` does not exist (expected a tokenizer.json or a sentencepiece tokenizer.model "
         "file, or a model folder holding one)");
  if (!is_directory(flag_value)) return flag_value;
  std::string looked_for;
  for (const char* name : kTokenizerFiles) {
    const std::string candidate = flag_value + "/" + name;
    if (path_exists(candidate)) return candidate;
    looked_for += (looked_for.empty() ? "`" : ", `") + candidate + "`";
  }
  fail("tokenizer `", flag_value, "` is a folder without a tokenizer in it (looked for ", looked_for,
       "); give the tokenizer file or a model folder that holds one");
}

bool is_tokenizer_json(const std::string& path) {
  return ends_with(path, ".json");
}

std::string find_tokenizer_in(const std::string& folder) {
  for (const char* name : kTokenizerFiles)
    if (path_exists(folder + "/" + name)) return folder + "/" + name;
  return "";
}

}  // namespace ll
