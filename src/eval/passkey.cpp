#include "eval/passkey.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "eval/numpy_random.h"
#include "util/error.h"

namespace ll {

namespace {

const char kTask[] =
    "There is an important info hidden inside a lot of irrelevant text. Find it and memorize them. I will quiz you "
    "about the important information there.";
const char kFiller[] = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again.";
const char kQuestion[] = "What is the pass key? The pass key is";
constexpr int kFillerRepeats = 5000;

// " ".join([garbage] * 5000)
const std::string& filler_text() {
  static const std::string text = [] {
    std::string s;
    for (int i = 0; i < kFillerRepeats; ++i) s += (i ? " " : "") + std::string(kFiller);
    return s;
  }();
  return text;
}

}  // namespace

PasskeyPrompt passkey_prompt(int64_t n_garbage, uint32_t seed) {
  const std::string& filler = filler_text();
  LL_CHECK(n_garbage >= 1 && n_garbage <= int64_t(filler.size()), "passkey: n_garbage = ", n_garbage,
           " characters is outside [1, ", filler.size(),
           "] (LongLoRA's filler length; 0 comes from too small an --interval, since n_garbage is rounded down to "
           "a multiple of 1024)");
  NumpyRandomState rs(seed);
  PasskeyPrompt p;
  p.n_garbage = n_garbage;
  p.n_prefix = rs.randint(0, n_garbage);
  p.pass_key = rs.randint(1, 50000);
  p.depth = double(p.n_prefix) / double(n_garbage);
  p.answer = std::to_string(p.pass_key);
  const std::string key_line =
      "The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.";
  p.text = std::string(kTask) + "\n" + filler.substr(0, size_t(p.n_prefix)) + "\n" + key_line + "\n" +
           filler.substr(0, size_t(n_garbage - p.n_prefix)) + "\n" + kQuestion;
  return p;
}

std::vector<int64_t> passkey_garbage_lengths(int64_t max_tokens, int64_t interval) {
  LL_CHECK(max_tokens >= 1, "--max_tokens must be >= 1, got ", max_tokens);
  LL_CHECK(interval >= 1, "--interval must be >= 1, got ", interval);
  LL_CHECK(max_tokens >= interval, "--max_tokens ", max_tokens, " < --interval ", interval, ": no length to test");
  std::vector<int64_t> out;
  for (int64_t i = 0; i < max_tokens / interval; ++i)  // Python: int(3.75 * (i + 1) * interval // 1024 * 1024)
    out.push_back(int64_t(std::floor(3.75 * double(i + 1) * double(interval) / 1024.0) * 1024.0));
  return out;
}

bool passkey_trial(InferenceSession& session, const std::vector<int32_t>& prompt_ids,
                   const std::vector<int32_t>& answer_ids, std::vector<int32_t>* generated, bool reuse_prefix) {
  GenerateOptions go;
  go.max_new_tokens = int64_t(answer_ids.size());
  go.sampling.temperature = 0;  // model.generate(num_beams=1) without sampling arguments: greedy
  go.reuse_prefix = reuse_prefix;
  const GenerateResult r = generate(session, prompt_ids, go);
  if (generated) *generated = r.tokens;
  return r.tokens == answer_ids;
}

namespace {

struct Item {
  PasskeyPrompt prompt;
  std::vector<int32_t> ids, answer;
};

std::vector<Item> tokenized_prompts(const Tokenizer& tok, int64_t n_garbage, int64_t num_tests, int64_t vocab) {
  std::vector<Item> items;
  for (int64_t seed = 0; seed < num_tests; ++seed) {
    Item it;
    it.prompt = passkey_prompt(n_garbage, uint32_t(seed));
    it.ids = tok.encode_with_special_tokens(it.prompt.text);  // tokenizer(prompt): BOS + text for Llama
    it.answer = tok.encode(it.prompt.answer, false, false);  // tokenizer(answer).input_ids[:, 1:]
    for (int32_t id : it.ids)
      LL_CHECK(id < vocab, "passkey: tokenizer `", tok.path(), "` produced id ", id, " but the model's vocabulary is ",
               vocab, "; wrong --tokenizer?");
    items.push_back(std::move(it));
  }
  return items;
}

int64_t needed_capacity(const std::vector<Item>& items) {
  int64_t n = 0;
  for (const Item& it : items) n = std::max(n, int64_t(it.ids.size() + it.answer.size()));
  return n;
}

}  // namespace

std::vector<PasskeyPoint> run_passkey(Model& model, const Tokenizer& tok, const PasskeyOptions& o,
                                      const std::function<void(const PasskeyPoint&)>& on_point,
                                      const std::function<void(int64_t, int64_t)>& progress) {
  LL_CHECK(o.num_tests >= 1, "--num_tests must be >= 1, got ", o.num_tests);
  const std::vector<int64_t> lengths = passkey_garbage_lengths(o.max_tokens, o.interval);
  const int64_t vocab = model.options().config.vocab_size;
  for (int64_t n : lengths) passkey_prompt(n, 0);  // length errors before any work
  // The KV cache is sized for the longest length's prompts (+ answer); shorter lengths are tokenised lazily.
  const std::vector<Item> longest = tokenized_prompts(tok, lengths.back(), o.num_tests, vocab);
  const int64_t capacity = needed_capacity(longest);
  InferenceSession session(model, capacity);
  // Progress counts filler characters: known up front, and roughly proportional to the work.
  int64_t total_chars = 0, done_chars = 0;
  for (int64_t n : lengths) total_chars += n * o.num_tests;

  std::vector<PasskeyPoint> points;
  for (size_t i = 0; i < lengths.size(); ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<Item> current;
    const std::vector<Item>& items =
        i + 1 == lengths.size() ? longest : (current = tokenized_prompts(tok, lengths[i], o.num_tests, vocab));
    LL_CHECK(needed_capacity(items) <= capacity, "passkey: a prompt of ", lengths[i], " filler characters has ",
             needed_capacity(items), " tokens, more than the longest length's ", capacity);
    PasskeyPoint pt;
    pt.n_garbage = lengths[i];
    pt.trials.resize(items.size());
    // Longest filler prefix first: each next prompt's prefix is then a prefix of the cached one.
    std::vector<size_t> order(items.size());
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](size_t a, size_t b) { return items[a].prompt.n_prefix > items[b].prompt.n_prefix; });
    int64_t total = 0, passed = 0;
    for (size_t k : order) {
      const Item& it = items[k];
      PasskeyTrial& tr = pt.trials[k];
      tr.seed = int64_t(k);
      tr.pass_key = it.prompt.pass_key;
      tr.n_prefix = it.prompt.n_prefix;
      tr.depth = it.prompt.depth;
      tr.prompt_tokens = int64_t(it.ids.size());
      tr.answer_ids = it.answer;
      tr.correct = passkey_trial(session, it.ids, it.answer, &tr.generated, o.reuse_prefix);
      total += tr.prompt_tokens;
      passed += tr.correct;
      done_chars += lengths[i];
      if (progress) progress(done_chars, total_chars);
    }
    pt.mean_prompt_tokens = double(total) / double(o.num_tests);
    pt.reference_tokens = total / o.num_tests;
    pt.accuracy = double(passed) / double(o.num_tests);
    pt.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (on_point) on_point(pt);
    points.push_back(std::move(pt));
  }
  return points;
}

}  // namespace ll
