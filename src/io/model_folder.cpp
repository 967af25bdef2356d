#include "io/model_folder.h"

#include <ostream>

#include "util/error.h"
#include "util/files.h"

namespace ll {

std::string resolve_model_folder(const std::string& path, const char* flag, std::string* note) {
  if (path.empty() || !is_directory(path) || path_exists(path + "/config.json")) return path;
  const std::string exported = path + "/model";
  if (path_exists(exported + "/config.json")) {
    *note = str_cat(flag, " ", path, ": a full fine-tuning run's output folder; its model is ", exported);
    return exported;
  }
  LL_CHECK(!path_exists(path + "/adapter_config.json"), flag, " `", path,
           "` is a LoRA adapter folder (a LoRA run's output), not a model: pass it as --peft_model, with ", flag,
           " the base model it was trained from");
  return path;
}

std::string resolve_base_model(const std::string& path, std::ostream* note_to) {
  std::string note;
  std::string resolved = resolve_model_folder(path, "--base_model", &note);
  if (note_to && !note.empty()) *note_to << note << "\n" << std::flush;
  return resolved;
}

}  // namespace ll
