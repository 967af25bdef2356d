// The safetensors files of a Hugging Face model folder, opened and indexed by tensor name: `model.safetensors`, or
// `model.safetensors.index.json` with its shards. Used to load the weights and, before any model is built, to check
// config.json against the tensors' shapes.
#pragma once
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace ll {

constexpr const char* kHfWeightsFile = "model.safetensors";
constexpr const char* kHfWeightIndexFile = "model.safetensors.index.json";

struct HfWeightFiles {
  std::vector<std::unique_ptr<SafetensorsFile>> files;  // each file once, in index order
  std::map<std::string, const SafetensorsFile*> where;  // tensor name → its file
};

// Whether `dir` holds safetensors weights (either layout).
bool has_hf_weight_files(const std::string& dir);
// Opens and validates the folder's weight files: every index entry a plain file name inside the folder, every mapped
// file present and holding what the map says. A folder with only PyTorch `.bin` / `.pth` pickles is refused with a
// conversion hint; a folder with neither, naming both expected files.
HfWeightFiles open_hf_weight_files(const std::string& dir);

}  // namespace ll
