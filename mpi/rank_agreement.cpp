#include "mpi/rank_agreement.h"

#include <cstring>
#include <exception>
#include <set>
#include <vector>

#include "util/error.h"

namespace ll {

std::string broadcast_text(Comm& comm, const std::string& text, int root) {
  if (comm.size() == 1) return text;
  const int64_t bytes = int64_t(comm.all_reduce_max(comm.rank() == root ? double(text.size()) : 0.0));
  std::vector<int32_t> words(size_t((bytes + 3) / 4));
  if (comm.rank() == root) std::memcpy(words.data(), text.data(), text.size());
  if (!words.empty()) comm.broadcast(Tensor(words.data(), DType::I32, Device::CPU, {int64_t(words.size())}), root);
  return std::string(reinterpret_cast<const char*>(words.data()), size_t(bytes));
}

void agree_on_failure(Comm& comm, const std::function<void()>& step) {
  std::exception_ptr error;
  std::string message;
  try {
    step();
  } catch (const std::exception& e) {
    error = std::current_exception();
    message = e.what();
  }
  // The lowest failing rank (size() when none failed): max of -rank over the failing ranks.
  const int first = -int(comm.all_reduce_max(error ? -double(comm.rank()) : -double(comm.size())));
  if (first == comm.size()) return;
  message = broadcast_text(comm, message, first);
  if (comm.rank() == first) std::rethrow_exception(error);
  throw Error(message);
}

std::string flag_difference(const nlohmann::json& mine, const nlohmann::json& reference, int my_rank) {
  auto shown = [](const nlohmann::json& flags, const std::string& name) -> std::string {
    if (!flags.is_object() || !flags.contains(name)) return "not given";
    const nlohmann::json& v = flags.at(name);
    return v.is_string() ? "`" + v.get<std::string>() + "`" : v.dump();
  };
  std::set<std::string> names;
  for (const nlohmann::json* flags : {&mine, &reference})
    if (flags->is_object())
      for (auto it = flags->begin(); it != flags->end(); ++it) names.insert(it.key());
  for (const std::string& name : names) {
    const bool in_mine = mine.is_object() && mine.contains(name), in_ref = reference.is_object() && reference.contains(name);
    if (in_mine && in_ref && mine.at(name) == reference.at(name)) continue;
    return str_cat("--", name, " is ", shown(mine, name), " on rank ", my_rank, " but ", shown(reference, name),
                   " on rank 0");
  }
  return "";
}

void check_flags_agree(Comm& comm, const nlohmann::json& flags) {
  if (comm.size() == 1) return;
  const nlohmann::json reference = nlohmann::json::parse(broadcast_text(comm, flags.dump(), 0));
  agree_on_failure(comm, [&] {
    const std::string difference = flag_difference(flags, reference, comm.rank());
    if (!difference.empty())
      fail("the ranks were started with different flags: ", difference, ". Every rank must get the same flags "
           "(an MPMD launch `mpirun ... : ...` gives each part its own)");
  });
}

}  // namespace ll
