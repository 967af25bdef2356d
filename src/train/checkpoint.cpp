#include "train/checkpoint.h"

#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <filesystem>

#include "io/param_io.h"
#include "io/safetensors.h"
#include "util/files.h"

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

int64_t checkpoint_step(const fs::path& p) {
  const std::string name = p.filename().string();
  if (name.rfind("checkpoint-", 0) != 0) return -1;
  const std::string digits = name.substr(11);
  if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) return -1;
  return std::stoll(digits);
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
                              {"zero_stage", optimizer.stage()},
                              {"flags", state.flags}};
    write_file_atomic(tmp_dir + "/" + kState, j.dump(2) + "\n");  // last: its presence marks completeness
    // Replace an existing checkpoint of the same step only once the new one is complete.
    if (fs::exists(final_dir)) fs::remove_all(final_dir);
    fs::rename(tmp_dir, final_dir);
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

std::vector<std::string> list_checkpoints(const std::string& output_dir) {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!is_directory(output_dir)) return {};
  for (const auto& e : fs::directory_iterator(output_dir)) {
    const int64_t step = checkpoint_step(e.path());
    if (step >= 0 && e.is_directory() && fs::exists(e.path() / kState)) found.push_back({step, e.path().string()});
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

void rotate_checkpoints(const std::string& output_dir, int64_t keep) {
  if (keep <= 0) return;
  const std::vector<std::string> all = list_checkpoints(output_dir);
  for (size_t i = 0; i + size_t(keep) < all.size(); ++i) fs::remove_all(all[i]);
}

}  // namespace ll
