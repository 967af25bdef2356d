#include "io/hf_weight_files.h"

#include <algorithm>
#include <filesystem>

#include <nlohmann/json.hpp>

#include "io/json_util.h"
#include "io/param_io.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

namespace fs = std::filesystem;
using Json = nlohmann::json;

[[noreturn]] void refuse_folder_without_safetensors(const std::string& dir) {
  LL_CHECK(is_directory(dir), "`", dir, "` is not a directory (expected a Hugging Face model folder)");
  std::vector<std::string> pickles;
  for (const auto& e : fs::directory_iterator(dir)) {
    const std::string name = e.path().filename().string();
    if (name.size() > 4 && (name.substr(name.size() - 4) == ".bin" || name.substr(name.size() - 4) == ".pth"))
      pickles.push_back(name);
  }
  std::sort(pickles.begin(), pickles.end());
  if (!pickles.empty()) {
    fail(dir, ": has only PyTorch pickle weights (", name_list(pickles, 4),
         "), which this engine does not read (unpickling runs arbitrary code). Convert the folder once with:\n"
         "  python3 -c \"import sys; from transformers import AutoModelForCausalLM as M; "
         "M.from_pretrained(sys.argv[1], torch_dtype='auto').save_pretrained(sys.argv[2], safe_serialization=True)\" ",
         dir, " ", dir, "-safetensors\n"
         "and copy the tokenizer files (tokenizer.model, tokenizer_config.json, special_tokens_map.json) alongside.");
  }
  fail(dir, ": no ", kHfWeightsFile, " or ", kHfWeightIndexFile,
       " (expected a Hugging Face model folder with safetensors weights)");
}

HfWeightFiles open_single(const std::string& path) {
  HfWeightFiles s;
  s.files.push_back(std::make_unique<SafetensorsFile>(path));
  for (const std::string& name : s.files[0]->names()) s.where[name] = s.files[0].get();
  return s;
}

HfWeightFiles open_sharded(const std::string& dir) {
  const std::string index_path = dir + "/" + kHfWeightIndexFile;
  const Json index = read_json_file(index_path);
  if (!index.is_object() || !index.contains("weight_map") || !index.at("weight_map").is_object())
    fail(index_path, ": expected an object with a `weight_map` object (tensor name → shard file)");
  std::map<std::string, std::vector<std::string>> by_file;
  for (const auto& [name, file] : index.at("weight_map").items()) {
    if (!file.is_string()) fail(index_path, ": weight_map[\"", name, "\"] must be a file name, got ", file.dump());
    const std::string f = file.get<std::string>();
    if (f.empty() || f.find('/') != std::string::npos || f == "." || f == "..")
      fail(index_path, ": weight_map[\"", name, "\"] = \"", f, "\" is not a plain file name inside the folder");
    by_file[f].push_back(name);
  }
  HfWeightFiles s;
  for (const auto& [file, names] : by_file) {
    const std::string path = dir + "/" + file;
    if (!path_exists(path))
      fail(index_path, ": maps ", names.size(), " tensors (e.g. `", names[0], "`) to `", file,
           "`, which does not exist in the folder");
    s.files.push_back(std::make_unique<SafetensorsFile>(path));
    for (const std::string& name : names) {
      if (!s.files.back()->contains(name))
        fail(index_path, ": maps `", name, "` to `", file, "`, but that file has no tensor of that name");
      s.where[name] = s.files.back().get();
    }
  }
  return s;
}

}  // namespace

bool has_hf_weight_files(const std::string& dir) {
  return path_exists(dir + "/" + kHfWeightsFile) || path_exists(dir + "/" + kHfWeightIndexFile);
}

HfWeightFiles open_hf_weight_files(const std::string& dir) {
  if (path_exists(dir + "/" + kHfWeightsFile)) return open_single(dir + "/" + kHfWeightsFile);
  if (path_exists(dir + "/" + kHfWeightIndexFile)) return open_sharded(dir);
  refuse_folder_without_safetensors(dir);
}

}  // namespace ll
