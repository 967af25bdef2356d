// Where LongLoRA's scripts take `path_to_saving_checkpoints` as a model (`eval.py --base_model` after full
// fine-tuning, `merge_lora_weights_and_save_hf_model.py --base_model`), our binaries take a build/train output
// folder too: a full fine-tuning run exports its Hugging Face folder to output_dir/model.
#pragma once
#include <iosfwd>
#include <string>

namespace ll {

// `path` when it holds config.json (or is not a folder: the loader reports that); a run's output folder without
// config.json but with model/config.json → path/model, with *note set to a line saying so. A LoRA run's folder
// (adapter_config.json, no model/) is an error naming `flag` that says to pass it as --peft_model.
std::string resolve_model_folder(const std::string& path, const char* flag, std::string* note);

// resolve_model_folder for --base_model (build/eval, build/merge, build/serve), its note written as a line to
// `note_to`; nullptr drops it (the other ranks of an mpirun launch, which resolve the same).
std::string resolve_base_model(const std::string& path, std::ostream* note_to);

}  // namespace ll
