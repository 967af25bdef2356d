#include "train/deepspeed_config.h"

#include <algorithm>
#include <cctype>
#include <cmath>

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"
#include "util/flags.h"
#include "util/strings.h"

namespace ll {

namespace {

using json = nlohmann::json;

class Reader {
 public:
  Reader(std::string path, const Flags& flags) : path_(std::move(path)), flags_(flags) {}

  [[noreturn]] void error(const std::string& key, const std::string& what) const {
    fail("--deepspeed `", path_, "`: ", key, ": ", what);
  }

  // The Trainer's rule: "auto" takes the flag's value; a number must equal it.
  void auto_or_equal(const json& parent, const std::string& key, const std::string& where, double ours,
                     const std::string& flag) const {
    if (!parent.contains(key)) return;
    const json& v = parent[key];
    if (v.is_string() && v.get<std::string>() == "auto") return;
    if (!v.is_number()) error(where + key, "expected a number or \"auto\", got " + v.dump());
    const double theirs = v.get<double>();
    if (std::fabs(theirs - ours) > 1e-12 * std::max(1.0, std::fabs(ours)))
      error(where + key, str_cat(v.dump(), " disagrees with --", flag, " ", ours, "; set it to \"auto\" or to ", ours));
  }

  const json& object(const json& parent, const std::string& key) const {
    const json& v = parent[key];
    if (!v.is_object()) error(key, "expected a JSON object, got " + v.dump());
    return v;
  }

  // bf16.enabled / fp16.enabled: true, false, or "auto" (absent: "auto").
  int enabled(const json& j, const std::string& section) const {  // -1 auto, 0 false, 1 true
    if (!j.contains(section)) return -1;
    const json& s = object(j, section);
    if (!s.contains("enabled")) return -1;
    const json& e = s["enabled"];
    if (e.is_boolean()) return e.get<bool>() ? 1 : 0;
    if (e.is_string() && e.get<std::string>() == "auto") return -1;
    error(section + ".enabled", "expected true, false or \"auto\", got " + e.dump());
  }

  const Flags& flags() const { return flags_; }

 private:
  std::string path_;
  const Flags& flags_;
};

void apply_zero(const Reader& r, const json& j, TrainOptions& o, std::string* summary) {
  if (!j.contains("zero_optimization")) return;
  const json& z = r.object(j, "zero_optimization");
  if (z.contains("stage")) {
    const json& st = z["stage"];
    if (!st.is_number_integer()) r.error("zero_optimization.stage", "expected 0, 1, 2 or 3, got " + st.dump());
    const int64_t stage = st.get<int64_t>();
    if (stage == 1)
      r.error("zero_optimization.stage", "ZeRO stage 1 is not implemented; use 2 (it shards the gradients too, with "
                                         "the same results) or 3");
    if (stage != 0 && stage != 2 && stage != 3)
      r.error("zero_optimization.stage", "expected 0, 2 or 3, got " + st.dump());
    if (r.flags().was_set("zero_stage") && o.zero_stage != stage)
      r.error("zero_optimization.stage", str_cat(stage, " disagrees with --zero_stage ", o.zero_stage));
    o.zero_stage = stage;
  }
  *summary += str_cat("ZeRO stage ", o.zero_stage);
  for (const char* key : {"offload_optimizer", "offload_param"}) {
    if (!z.contains(key)) continue;
    const json& off = z[key];
    if (!off.is_object()) r.error(str_cat("zero_optimization.", key), "expected a JSON object, got " + off.dump());
    const std::string device = off.contains("device") && off["device"].is_string() ? off["device"].get<std::string>()
                                                                                    : "none";
    if (device == "none") continue;
    if (device != "cpu")
      r.error(str_cat("zero_optimization.", key, ".device"),
              str_cat("`", device, "` offload is not implemented (only cpu, and only where the model is in host "
                                   "memory already: --device cpu)"));
    if (o.device != "cpu")
      r.error(str_cat("zero_optimization.", key, ".device"),
              str_cat("cpu offload of the ", key == std::string("offload_param") ? "parameters" : "optimizer state",
                      " from the GPU is not implemented; use a config without it (ds_configs/stage2.json, or "
                      "stage3.json without offload_*), or --offload_checkpoints true to move activations to the host"));
    *summary += str_cat(", ", key == std::string("offload_param") ? "parameters" : "optimizer state",
                        " in host memory (--device cpu: already there)");
  }
  if (z.contains("reduce_bucket_size") && o.zero_stage == 2) {
    const json& b = z["reduce_bucket_size"];
    if (b.is_number() && !r.flags().was_set("reduce_bucket_size")) {
      if (!(b.get<double>() >= 0 && b.get<double>() <= 9e15))
        r.error("zero_optimization.reduce_bucket_size", "expected a number of elements >= 0, got " + b.dump());
      o.reduce_bucket_size = int64_t(b.get<double>());
    } else {
      r.auto_or_equal(z, "reduce_bucket_size", "zero_optimization.", double(o.reduce_bucket_size),
                      "reduce_bucket_size");
    }
  }
}

void apply_optimizer(const Reader& r, const json& j, const TrainOptions& o) {
  if (!j.contains("optimizer")) return;
  const json& opt = r.object(j, "optimizer");
  const std::string type = opt.contains("type") && opt["type"].is_string() ? opt["type"].get<std::string>() : "";
  if (to_lower(type) != "adamw" && to_lower(type) != "adam")
    r.error("optimizer.type", "`" + type + "`: only AdamW is implemented (AdamW, or Adam with its default adam_w_mode)");
  if (!opt.contains("params")) return;
  const json& p = opt["params"];
  if (!p.is_object()) r.error("optimizer.params", "expected a JSON object, got " + p.dump());
  r.auto_or_equal(p, "lr", "optimizer.params.", o.learning_rate, "learning_rate");
  r.auto_or_equal(p, "eps", "optimizer.params.", o.adam_epsilon, "adam_epsilon");
  r.auto_or_equal(p, "weight_decay", "optimizer.params.", o.weight_decay, "weight_decay");
  if (p.contains("betas") && !(p["betas"].is_string() && p["betas"].get<std::string>() == "auto")) {
    const json& b = p["betas"];
    if (!b.is_array() || b.size() != 2) r.error("optimizer.params.betas", "expected [beta1, beta2] or \"auto\"");
    const json pair = {{"0", b[0]}, {"1", b[1]}};
    r.auto_or_equal(pair, "0", "optimizer.params.betas.", o.adam_beta1, "adam_beta1");
    r.auto_or_equal(pair, "1", "optimizer.params.betas.", o.adam_beta2, "adam_beta2");
  }
}

// The Trainer lets a config's scheduler replace --lr_scheduler_type.
void apply_scheduler(const Reader& r, const json& j, TrainOptions& o, std::string* summary) {
  if (!j.contains("scheduler")) return;
  const json& sc = r.object(j, "scheduler");
  const std::string type = sc.contains("type") && sc["type"].is_string() ? sc["type"].get<std::string>() : "";
  if (type != "WarmupDecayLR" && type != "WarmupLR")
    r.error("scheduler.type", "`" + type + "`: implemented are WarmupDecayLR and WarmupLR (or leave the scheduler "
                                           "out and use --lr_scheduler_type)");
  const json empty = json::object();
  const json& p = sc.contains("params") ? sc["params"] : empty;
  if (!p.is_object()) r.error("scheduler.params", "expected a JSON object, got " + p.dump());
  std::string warmup = "log";
  if (p.contains("warmup_type")) {
    if (!p["warmup_type"].is_string()) r.error("scheduler.params.warmup_type", "expected \"log\" or \"linear\"");
    warmup = p["warmup_type"].get<std::string>();
    if (warmup != "log" && warmup != "linear")
      r.error("scheduler.params.warmup_type", "expected \"log\" or \"linear\", got `" + warmup + "`");
  }
  if (p.contains("warmup_min_lr") && !(p["warmup_min_lr"].is_number() && p["warmup_min_lr"].get<double>() == 0) &&
      !(p["warmup_min_lr"].is_string() && p["warmup_min_lr"].get<std::string>() == "auto"))
    r.error("scheduler.params.warmup_min_lr", "only 0 (or \"auto\", which is 0) is implemented, got " +
                                                  p["warmup_min_lr"].dump());
  r.auto_or_equal(p, "warmup_max_lr", "scheduler.params.", o.learning_rate, "learning_rate");
  r.auto_or_equal(p, "warmup_num_steps", "scheduler.params.", double(o.warmup_steps), "warmup_steps");
  if (type == "WarmupDecayLR" && p.contains("total_num_steps") && p["total_num_steps"].is_number())
    r.auto_or_equal(p, "total_num_steps", "scheduler.params.", double(o.max_steps), "max_steps");
  const std::string before = o.lr_scheduler_type;
  o.lr_scheduler_type = type == "WarmupDecayLR" ? "linear" : "constant_with_warmup";
  o.lr_warmup_type = warmup == "log" ? "deepspeed_log" : "deepspeed_linear";
  *summary += str_cat(", schedule ", type, " (", warmup, " warmup over max(2, ", o.warmup_steps, ") steps",
                      type == "WarmupDecayLR" ? ", then linear decay to 0" : ", then constant", ")");
  if (r.flags().was_set("lr_scheduler_type") && before != o.lr_scheduler_type)
    *summary += str_cat(" replacing --lr_scheduler_type ", before, " (the Trainer runs DeepSpeed's scheduler)");
}

}  // namespace

DeepSpeedSettings apply_deepspeed_config(const std::string& path, const Flags& flags, TrainOptions& o,
                                         std::vector<std::string>* notes) {
  std::string text;
  try {
    text = read_text_file(path);
  } catch (const Error& e) {
    fail("--deepspeed: ", e.what());
  }
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("--deepspeed `", path, "`: invalid JSON: ", e.what());
  }
  LL_CHECK(j.is_object(), "--deepspeed `", path, "`: expected a JSON object (a DeepSpeed config)");
  const Reader r(path, flags);
  DeepSpeedSettings s;
  if (const int bf16 = r.enabled(j, "bf16"); bf16 >= 0) s.bf16_set = true, s.bf16 = bf16 == 1;
  if (r.enabled(j, "fp16") == 1) r.error("fp16.enabled", "fp16 training is not implemented; use bf16");
  r.auto_or_equal(j, "train_micro_batch_size_per_gpu", "", double(o.per_device_train_batch_size),
                  "per_device_train_batch_size");
  r.auto_or_equal(j, "gradient_accumulation_steps", "", double(o.gradient_accumulation_steps),
                  "gradient_accumulation_steps");
  r.auto_or_equal(j, "gradient_clipping", "", o.max_grad_norm, "max_grad_norm");
  o.deepspeed_config = path;
  o.deepspeed_train_batch_size = 0;
  if (j.contains("train_batch_size") && !(j["train_batch_size"].is_string() &&
                                          j["train_batch_size"].get<std::string>() == "auto")) {
    const json& b = j["train_batch_size"];
    const double v = b.is_number() ? b.get<double>() : -1;
    if (!(v >= 1 && v <= 9e15 && v == std::floor(v)))
      r.error("train_batch_size", "expected a positive integer or \"auto\", got " + b.dump());
    o.deepspeed_train_batch_size = int64_t(v);
  }
  std::string summary;
  apply_zero(r, j, o, &summary);
  if (summary.empty()) summary = str_cat("ZeRO stage ", o.zero_stage);
  apply_optimizer(r, j, o);
  apply_scheduler(r, j, o, &summary);
  notes->push_back(str_cat("--deepspeed ", path, ": ", summary));
  return s;
}

void check_deepspeed_train_batch_size(const TrainOptions& o, int64_t world_size) {
  if (o.deepspeed_train_batch_size <= 0) return;
  const int64_t product = o.per_device_train_batch_size * o.gradient_accumulation_steps * world_size;
  LL_CHECK(o.deepspeed_train_batch_size == product, "--deepspeed `", o.deepspeed_config, "`: train_batch_size: ",
           o.deepspeed_train_batch_size, " is not micro batch ", o.per_device_train_batch_size,
           " × gradient accumulation ", o.gradient_accumulation_steps, " × world size ", world_size, " = ", product,
           ", as DeepSpeed requires; set it to \"auto\" or to ", product);
}

}  // namespace ll
