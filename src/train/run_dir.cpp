#include "train/run_dir.h"

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <set>

#include "io/param_io.h"
#include "train/checkpoint.h"
#include "util/error.h"
#include "util/files.h"

namespace fs = std::filesystem;

namespace ll {

namespace {

constexpr const char* kLockFile = ".lock";
constexpr const char* kTrainingArgs = "training_args.json";
// What a run writes at the top of output_dir besides its checkpoints: its flags, metrics, the op profile and the
// exported adapter (io/peft.cpp; trainable_params.bin is LongLoRA's name for the trainable weights).
const char* const kRunFiles[] = {kTrainingArgs,         "metrics.jsonl",        "op_profile.json",
                                 "adapter_config.json", "adapter_model.safetensors", "trainable_params.safetensors",
                                 "trainable_params.bin", "longlora.json"};
// The export folders (full fine-tuning: model/, --save_merged: merged/) and what save_hf_folder writes into them
// besides the shards model-NNNNN-of-NNNNN.safetensors.
const char* const kExportFolders[] = {"model", "merged"};
const char* const kExportFiles[] = {"config.json",           "model.safetensors",       "model.safetensors.index.json",
                                    "tokenizer.model",       "tokenizer.json",          "tokenizer_config.json",
                                    "special_tokens_map.json", "added_tokens.json",     "generation_config.json"};

bool all_digits(const std::string& s) {
  return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos;
}

// `name` without the ".tmp.<pid>" of an interrupted atomic write (util/files.h, io/safetensors.cpp).
std::string without_temp_suffix(const std::string& name) {
  const size_t at = name.rfind(".tmp.");
  return at != std::string::npos && all_digits(name.substr(at + 5)) ? name.substr(0, at) : name;
}

bool is_run_file(const std::string& name) {
  const std::string base = without_temp_suffix(name);
  return std::any_of(std::begin(kRunFiles), std::end(kRunFiles), [&](const char* f) { return base == f; });
}

bool is_export_file(const std::string& name) {
  const std::string base = without_temp_suffix(name);
  if (std::any_of(std::begin(kExportFiles), std::end(kExportFiles), [&](const char* f) { return base == f; }))
    return true;
  // model-00001-of-00002.safetensors
  return base.size() == 32 && base.rfind("model-", 0) == 0 && all_digits(base.substr(6, 5)) &&
         base.substr(11, 4) == "-of-" && all_digits(base.substr(15, 5)) && base.substr(20) == ".safetensors";
}

std::vector<std::string> export_files_in(const std::string& folder) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(folder, ec))
    if (e.is_regular_file() && is_export_file(e.path().filename().string())) found.push_back(e.path().filename());
  std::sort(found.begin(), found.end());
  return found;
}

// config.json holding a run's flags, as older versions wrote it into output_dir (a model's config has model_type).
bool is_flags_config(const std::string& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec) || fs::file_size(path, ec) > (1u << 20)) return false;
  const nlohmann::json j = nlohmann::json::parse(read_text_file(path), nullptr, /*allow_exceptions=*/false);
  return j.is_object() && j.contains("output_dir") && !j.contains("model_type");
}

// The absolute path with symbolic links, "." and ".." resolved as far as it exists (the rest lexically).
fs::path resolved(const std::string& path) {
  std::error_code ec;
  fs::path p = fs::weakly_canonical(fs::absolute(path), ec);
  if (ec) p = fs::absolute(path).lexically_normal();
  fs::path clean;
  for (const fs::path& part : p)
    if (!part.empty()) clean /= part;  // "a/b/" ends in an empty part
  return clean;
}

// `inner` is `outer` or lies inside it.
bool is_within(const fs::path& inner, const fs::path& outer) {
  auto i = inner.begin();
  for (auto o = outer.begin(); o != outer.end(); ++o, ++i)
    if (i == inner.end() || *i != *o) return false;
  return true;
}

void check_outside_model_folder(const TrainOptions& o) {
  if (o.model_name_or_path.empty()) return;
  if (is_within(resolved(o.output_dir), resolved(o.model_name_or_path)))
    fail("--output_dir `", o.output_dir, "` is the model folder --model_name_or_path `", o.model_name_or_path,
         "` or lies inside it: a run writes its checkpoints, metrics and exports there, among (and over) the "
         "model's files; choose an --output_dir outside the model folder");
}

// --overwrite_output_dir deletes the previous run's checkpoints: it cannot go with resuming one of them.
void check_overwrite_keeps_the_resumed_checkpoint(const TrainOptions& o) {
  if (!o.overwrite_output_dir || o.resume_from_checkpoint.empty()) return;
  if (o.resume_from_checkpoint == "auto" || is_within(resolved(o.resume_from_checkpoint), resolved(o.output_dir)))
    fail("--overwrite_output_dir true deletes the checkpoints in --output_dir `", o.output_dir,
         "`, but --resume_from_checkpoint ", o.resume_from_checkpoint,
         " resumes from one of them: give --overwrite_output_dir true to start afresh, or --resume_from_checkpoint "
         "to continue, not both");
}

// Deletes what previous_run_files listed: an export folder only loses the files save_hf_folder writes (and goes
// when nothing else is left in it); everything else listed is the run's own. Prints what it did.
void remove_previous_run(const std::string& output_dir, const std::vector<std::string>& entries) {
  std::vector<std::string> removed, kept;
  for (const std::string& name : entries) {
    const std::string path = (fs::path(output_dir) / name).string();
    const bool export_folder = std::find(std::begin(kExportFolders), std::end(kExportFolders), name) !=
                               std::end(kExportFolders);
    if (!export_folder) {
      fs::remove_all(path);
      removed.push_back(name);
      continue;
    }
    for (const std::string& file : export_files_in(path)) fs::remove(fs::path(path) / file);
    if (fs::is_empty(path)) {
      fs::remove(path);
      removed.push_back(name + "/");
      continue;
    }
    std::vector<std::string> others;
    for (const auto& e : fs::directory_iterator(path)) others.push_back(e.path().filename());
    std::sort(others.begin(), others.end());
    removed.push_back("the exported model in " + name + "/");
    kept.push_back(str_cat(name, "/ (it also holds ", name_list(others, 6), ")"));
  }
  std::fprintf(stderr, "--overwrite_output_dir: removed the previous run's %s from %s%s%s\n", name_list(removed).c_str(),
               output_dir.c_str(), kept.empty() ? "" : "; kept ", name_list(kept).c_str());
}

std::string read_holder(int fd) {
  char buf[512];
  const ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
  std::string s(buf, size_t(std::max<ssize_t>(n, 0)));
  while (!s.empty() && (s.back() == '\n' || s.back() == '\0')) s.pop_back();
  return s;
}

}  // namespace

OutputDirLock::OutputDirLock(const std::string& output_dir) {
  const std::string path = (fs::path(output_dir) / kLockFile).string();
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) fail("cannot open the lock file `", path, "` of --output_dir: ", std::strerror(errno));
  // flock locks belong to the open file description: another open() of the file, in this process or another,
  // conflicts; the kernel releases the lock when the descriptor is closed or the process dies.
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = read_holder(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      fail("--output_dir `", output_dir, "` is in use by another run (", holder.empty() ? "holder unknown" : holder,
           "; ", path, "): two runs in one folder would mix their checkpoints and metrics. Wait for it to end, stop "
           "it, or choose another --output_dir");
    // A file system without locks (some network mounts): run unprotected rather than not at all.
    std::fprintf(stderr, "warning: cannot lock `%s` (%s); nothing keeps a second run out of this --output_dir\n",
                 path.c_str(), std::strerror(err));
    return;
  }
  char host[256] = {};
  ::gethostname(host, sizeof host - 1);
  char started[64] = {};
  const std::time_t now = std::time(nullptr);
  std::tm tm_now {};
  ::localtime_r(&now, &tm_now);
  std::strftime(started, sizeof started, "%Y-%m-%d %H:%M:%S %z", &tm_now);
  const std::string who = str_cat("pid ", ::getpid(), " on ", host, ", started ", started, "\n");
  // Best effort: the lock is what keeps others out, the text only names the holder.
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, who.data(), who.size(), 0) != ssize_t(who.size()))
    std::fprintf(stderr, "warning: cannot write the holder into `%s`: %s\n", path.c_str(), std::strerror(errno));
}

OutputDirLock::~OutputDirLock() {
  if (fd_ >= 0) ::close(fd_);
}

std::vector<std::string> previous_run_files(const std::string& output_dir, const std::vector<std::string>& inputs) {
  std::vector<std::string> found;
  if (!is_directory(output_dir)) return found;
  const CheckpointFolders checkpoints = scan_checkpoint_folders(output_dir);
  std::set<std::string> checkpoint_names(checkpoints.incomplete.begin(), checkpoints.incomplete.end());
  checkpoint_names.insert(checkpoints.in_flight.begin(), checkpoints.in_flight.end());
  for (const auto& c : checkpoints.complete) checkpoint_names.insert(c.second);
  std::vector<fs::path> kept_inputs;
  for (const std::string& input : inputs)
    if (!input.empty() && path_exists(input)) kept_inputs.push_back(resolved(input));
  for (const auto& e : fs::directory_iterator(output_dir)) {
    const std::string name = e.path().filename().string();
    bool run_entry = false;
    if (e.is_directory()) {
      run_entry = checkpoint_names.count(name) ||
                  (std::find(std::begin(kExportFolders), std::end(kExportFolders), name) != std::end(kExportFolders) &&
                   !export_files_in(e.path().string()).empty());
    } else {
      run_entry = is_run_file(name) || (name == "config.json" && is_flags_config(e.path().string()));
    }
    const fs::path here = resolved(e.path().string());
    const bool holds_input = std::any_of(kept_inputs.begin(), kept_inputs.end(),
                                         [&](const fs::path& input) { return is_within(input, here); });
    if (run_entry && !holds_input) found.push_back(name);
  }
  std::sort(found.begin(), found.end());
  return found;
}

std::unique_ptr<OutputDirLock> prepare_output_dir(const TrainOptions& o) {
  check_outside_model_folder(o);
  check_overwrite_keeps_the_resumed_checkpoint(o);
  make_directories(o.output_dir);
  auto lock = std::make_unique<OutputDirLock>(o.output_dir);
  const bool resume = !o.resume_from_checkpoint.empty();
  if (!resume || o.overwrite_output_dir) {
    const std::vector<std::string> previous = previous_run_files(
        o.output_dir, {o.model_name_or_path, o.model_config, o.tokenizer, o.data_path, o.sft_data_path,
                       resume ? o.resume_from_checkpoint : std::string()});
    if (!previous.empty() && !o.overwrite_output_dir)
      fail("--output_dir `", o.output_dir, "` already holds another run (", name_list(previous),
           "): a new run there would mix with it (rotation deleting the new checkpoints, metrics appended, a later "
           "resume picking the other run's checkpoint). Pass --overwrite_output_dir true to delete that run's files "
           "(checkpoints, metrics, training arguments, exports; other files stay) and start afresh, or "
           "--resume_from_checkpoint auto to continue it, or choose another --output_dir");
    if (!previous.empty()) remove_previous_run(o.output_dir, previous);
  }
  for (const std::string& note : tidy_checkpoint_folders(o.output_dir))
    std::fprintf(stderr, "%s: %s\n", o.output_dir.c_str(), note.c_str());
  return lock;
}

void write_training_args(const std::string& output_dir, const nlohmann::json& flags) {
  write_file_atomic((fs::path(output_dir) / kTrainingArgs).string(), flags.dump(2) + "\n");
}

}  // namespace ll
