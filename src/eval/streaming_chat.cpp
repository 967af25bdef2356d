#include "eval/streaming_chat.h"

#include <nlohmann/json.hpp>

#include "util/error.h"
#include "util/files.h"

namespace ll {

std::string streaming_turn_prompt(const std::string& instruction) {
  return "USER: " + instruction + "\n\nASSISTANT: ";
}

std::vector<std::string> read_streaming_instructions(const std::string& path) {
  LL_CHECK(path_exists(path), "--test_filepath `", path, "` does not exist");
  const nlohmann::json j = nlohmann::json::parse(read_text_file(path), nullptr, false);
  LL_CHECK(!j.is_discarded(), "--test_filepath `", path, "` is not valid JSON");
  LL_CHECK(j.is_array(), "--test_filepath `", path, "`: expected a JSON list of records with an `instruction`");
  std::vector<std::string> out;
  for (size_t i = 0; i < j.size(); ++i) {
    const nlohmann::json& r = j[i];
    LL_CHECK(r.is_object() && r.contains("instruction") && r["instruction"].is_string(), "--test_filepath `", path,
             "`: record ", i, " has no string field `instruction`");
    out.push_back(r["instruction"].get<std::string>());
  }
  LL_CHECK(!out.empty(), "--test_filepath `", path, "` holds no records");
  return out;
}

GenerateResult answer_turn(InferenceSession& session, const std::vector<int32_t>& ids, int64_t max_gen_len,
                           int32_t eos_id, const std::function<void(int32_t)>& on_token) {
  LL_CHECK(!ids.empty(), "streaming chat: an empty turn");
  GenerateOptions go;
  go.max_new_tokens = max_gen_len;
  go.sampling.temperature = 0;
  go.eos_id = eos_id;
  go.continue_session = true;  // everything fed so far stays: only the turn's ids run
  GenerateResult r = generate(session, ids, go, on_token);
  r.prompt_tokens = int64_t(ids.size());
  return r;
}

}  // namespace ll
