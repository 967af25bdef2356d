#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <filesystem>

#include "io/param_io.h"
#include "io/safetensors.h"
#include "util/files.h"
#include "util/strings.h"

namespace fs = std::filesystem;

namespace ll {

namespace {

constexpr const char* kWeights = "trainable.safetensors";
constexpr const char* kState = "trainer_state.json";

std::vector<unsigned char> host_bytes(Backend& backend, const Tensor& t) {
  std::vector<unsigned char> bytes(t.nbytes());
  backend.copy_to_host(bytes.data(), t);
  return bytes;
}

void restore(Backend& backend, const SafetensorsFile& file, const std::string& name, Tensor dst) {
  LL_CHECK(file.contains(name), "checkpoint `", file.path(), "` has no tensor `", name,
           "`: it was written by a run with other trainable parameters");
  const SafetensorsEntry& e = file.entry(name);
  LL_CHECK(e.dtype == dst.dtype && e.shape == dst.dims(), "checkpoint `", file.path(), "`: tensor `", name, "` is ",
           dtype_name(e.dtype), " with ", e.shape.size(), " dims, expected ", dtype_name(dst.dtype), dst.shape_str());
  std::vector<unsigned char> staging(e.nbytes);
  std::memcpy(staging.data(), e.data, e.nbytes);  // the mapping may be unaligned
  backend.copy_from_host(dst, staging.data());
}

constexpr const char* kPrefix = "checkpoint-";
constexpr const char* kInFlightSuffixes[] = {".tmp", ".deleting"};  // a save under way, a deletion under way

// The step `digits` names in the form save_checkpoint writes (std::to_string of an int64 >= 0); -1 otherwise.
int64_t parse_step(const std::string& digits) {
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  if (digits.size() > 1 && digits[0] == '0') return -1;
  int64_t step = 0;
  const auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), step);
  return ec == std::errc() && end == digits.data() + digits.size() ? step : -1;  // overflow: not a step
}

// The checkpoint folder `name` without its in-flight suffix ("" when it has none).
std::string in_flight_target(const std::string& name) {
  for (const std::string suffix : kInFlightSuffixes)
    if (ends_with(name, suffix)) return name.substr(0, name.size() - suffix.size());
  return "";
}

std::string join(const std::string& dir, const std::string& name) { return (fs::path(dir) / name).string(); }

// Renames `dir` to <dir>.deleting, then deletes it: a kill midway leaves a .deleting folder (removed at start-up),
// never a partly deleted folder under a checkpoint's name.
void delete_checkpoint_folder(const std::string& dir) {
  const std::string doomed = dir + ".deleting";
  fs::remove_all(doomed);
  fs::rename(dir, doomed);
  fs::remove_all(doomed);
}

}  // namespace

std::string save_checkpoint(const std::string& output_dir, ParamStore& params, DistributedOptimizer& optimizer,
                            Backend& backend, Comm& comm, const TrainerState& state) {
  const std::string final_dir = output_dir + "/checkpoint-" + std::to_string(state.global_step);
  const std::string tmp_dir = final_dir + ".tmp";  // the same name on every rank
  // Under ZeRO-3 every rank takes part in gathering the trainable weights; rank 0 writes them.
  params.with_readable(/*trainable_only=*/true, [&] {
    if (comm.rank() != 0) return;
    fs::remove_all(tmp_dir);
    make_directories(tmp_dir);
    std::vector<std::vector<unsigned char>> keep_alive;
    std::vector<SafetensorsWriteItem> weights;
    for (const Param& p : params.all()) {
      if (!p.trainable) continue;
      keep_alive.push_back(host_bytes(backend, p.value));
      check_finite_values(keep_alive.back().data(), p.value.dtype, p.value.dims(), tmp_dir + "/" + kWeights, p.name,
                          "refusing to checkpoint non-finite weights (lower --learning_rate)");
      weights.push_back({p.name, p.value.dtype, p.value.dims(), keep_alive.back().data()});
    }
    write_safetensors(tmp_dir + "/" + kWeights, weights);
  });
  comm.barrier();
  optimizer.save_moments(tmp_dir);
  comm.barrier();
  if (comm.rank() == 0) {
    const nlohmann::json j = {{"global_step", state.global_step},
                              {"optimizer_steps", optimizer.steps_taken()},
                              {"data_epoch", state.data.epoch},
                              {"data_index", state.data.index},
                              {"nonfinite_streak", state.nonfinite_streak},
                              {"world_size", comm.size()},
                              {"comm", comm.name()},
                              {"zero_stage", optimizer.stage()},
                              {"flags", state.flags}};
    write_file_atomic(tmp_dir + "/" + kState, j.dump(2) + "\n");  // last: its presence marks completeness
    // Replace an existing checkpoint of the same step only once the new one is complete, and rename the old one
    // away before the new one takes its name: a kill between the renames leaves the complete .tmp, which start-up
    // renames into place (tidy_checkpoint_folders).
    if (fs::exists(final_dir)) {
      const std::string old_dir = final_dir + ".deleting";
      fs::remove_all(old_dir);
      fs::rename(final_dir, old_dir);
      fs::rename(tmp_dir, final_dir);
      fs::remove_all(old_dir);
    } else {
      fs::rename(tmp_dir, final_dir);
    }
  }
  comm.barrier();
  return final_dir;
}

void load_checkpoint(const std::string& dir, ParamStore& params, DistributedOptimizer& optimizer, Backend& backend,
                     TrainerState* state) {
  LL_CHECK(is_directory(dir), "--resume_from_checkpoint: `", dir, "` is not a checkpoint directory");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(read_text_file(dir + "/" + kState));
    state->global_step = j.at("global_step");
    state->data.epoch = j.at("data_epoch");
    state->data.index = j.at("data_index");
    state->nonfinite_streak = j.at("nonfinite_streak");
    state->flags = j.at("flags");
    optimizer.set_steps_taken(j.at("optimizer_steps"));
  } catch (const nlohmann::json::exception& e) {
    fail("checkpoint `", dir, "/", kState, "` is malformed: ", e.what());
  }
  const SafetensorsFile weights(dir + "/" + kWeights);
  size_t trainable = 0;
  params.write_all([&](Param& p) {
    if (p.trainable) restore(backend, weights, p.name, p.value), ++trainable;
  });
  LL_CHECK(weights.names().size() == trainable, "checkpoint `", weights.path(), "` holds ", weights.names().size(),
           " tensors but this run trains ", trainable, " parameters");
  optimizer.load_moments(dir);
}

CheckpointFolders scan_checkpoint_folders(const std::string& output_dir) {
  CheckpointFolders found;
  if (!is_directory(output_dir)) return found;
  for (const auto& e : fs::directory_iterator(output_dir)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(kPrefix, 0) != 0 || !e.is_directory()) continue;
    const std::string target = in_flight_target(name);
    const int64_t step = parse_step((target.empty() ? name : target).substr(std::strlen(kPrefix)));
    if (step < 0) found.not_a_step.push_back(name);
    else if (!target.empty()) found.in_flight.push_back(name);
    else if (fs::exists(e.path() / kState)) found.complete.push_back({step, name});
    else found.incomplete.push_back(name);
  }
  std::sort(found.complete.begin(), found.complete.end());
  for (auto* names : {&found.incomplete, &found.in_flight, &found.not_a_step}) std::sort(names->begin(), names->end());
  return found;
}

std::vector<std::string> tidy_checkpoint_folders(const std::string& output_dir) {
  std::vector<std::string> notes;
  for (const std::string& name : scan_checkpoint_folders(output_dir).in_flight) {
    const std::string target = in_flight_target(name), path = join(output_dir, name);
    const bool complete_save = ends_with(name, ".tmp") && fs::exists(fs::path(path) / kState);
    if (complete_save && !fs::exists(join(output_dir, target) + "/" + kState)) {
      if (fs::exists(join(output_dir, target))) delete_checkpoint_folder(join(output_dir, target));
      fs::rename(path, join(output_dir, target));
      notes.push_back(str_cat(name, " is a complete checkpoint whose save was killed before its final rename: "
                              "renamed to ", target));
    } else {
      fs::remove_all(path);
      notes.push_back(str_cat("removed ", name, ", left by a killed checkpoint ",
                              ends_with(name, ".tmp") ? "save" : "deletion"));
    }
  }
  const CheckpointFolders found = scan_checkpoint_folders(output_dir);
  for (const std::string& name : found.incomplete) {
    if (fs::is_empty(join(output_dir, name))) {
      fs::remove(join(output_dir, name));
      notes.push_back(str_cat("removed ", name, ", an empty folder (left by a killed checkpoint deletion)"));
    } else {
      notes.push_back(str_cat("ignoring ", name, ": it has no ", kState, " (an incomplete checkpoint)"));
    }
  }
  for (const std::string& name : found.not_a_step)
    notes.push_back(str_cat("ignoring ", name, ": not a checkpoint-<step> name (a step is a number below 2^63 "
                            "without leading zeros)"));
  return notes;
}

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
  std::vector<std::string> out;
  for (const auto& c : scan_checkpoint_folders(output_dir).complete) out.push_back(join(output_dir, c.second));
  return out;
}

void rotate_checkpoints(const std::string& output_dir, int64_t keep) {
  if (keep <= 0) return;
  const std::vector<std::string> all = list_checkpoints(output_dir);
  for (size_t i = 0; i + size_t(keep) < all.size(); ++i) delete_checkpoint_folder(all[i]);
}

}  // namespace ll
