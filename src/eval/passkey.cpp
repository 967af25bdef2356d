#include "eval/passkey.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <numeric>

#include "eval/numpy_random.h"
#include "mpi/comm.h"
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

// A prompt's facts without its text (cheap): the sweep draws every trial's up front, builds a text only where a
// rank runs the trial.
PasskeyPrompt prompt_facts(int64_t n_garbage, uint32_t seed) {
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
  return p;
}

std::string prompt_text(const PasskeyPrompt& p) {
  const std::string& filler = filler_text();
  const std::string key_line = "The pass key is " + p.answer + ". Remember it. " + p.answer + " is the pass key.";
  return std::string(kTask) + "\n" + filler.substr(0, size_t(p.n_prefix)) + "\n" + key_line + "\n" +
         filler.substr(0, size_t(p.n_garbage - p.n_prefix)) + "\n" + kQuestion;
}

}  // namespace

PasskeyPrompt passkey_prompt(int64_t n_garbage, uint32_t seed) {
  PasskeyPrompt p = prompt_facts(n_garbage, seed);
  p.text = prompt_text(p);
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

// A prompt's ids: tokenizer(prompt), BOS + text for Llama.
std::vector<int32_t> prompt_ids(const Tokenizer& tok, const PasskeyPrompt& facts, int64_t vocab) {
  std::vector<int32_t> ids = tok.encode_with_special_tokens(prompt_text(facts));
  for (int32_t id : ids)
    LL_CHECK(id < vocab, "passkey: tokenizer `", tok.path(), "` produced id ", id, " but the model's vocabulary is ",
             vocab, "; wrong --tokenizer?");
  return ids;
}

int64_t needed_tokens(const std::vector<int32_t>& ids, const PasskeyTrial& tr) {
  return int64_t(ids.size() + tr.answer_ids.size());
}

// One trial of the sweep: its length (index into the lengths) and seed.
struct ScheduledTrial {
  size_t length = 0;
  int64_t seed = 0;
};

// Contiguous ranges of `weights` for `parts` ranks with about equal sums: each item goes to the part its weight's
// midpoint falls in (a monotone rule, so the parts are contiguous; parts beyond the items stay empty).
std::vector<int64_t> split_by_weight(const std::vector<int64_t>& weights, int parts) {
  int64_t total = 0;
  for (int64_t w : weights) total += w;
  std::vector<int64_t> counts(size_t(parts), 0);
  int64_t before = 0;
  for (int64_t w : weights) {
    const int64_t part = std::min<int64_t>(parts - 1, (2 * before + w) * parts / std::max<int64_t>(2 * total, 1));
    ++counts[size_t(part)];
    before += w;
  }
  return counts;
}

// The outcomes of every rank's trials (prompt tokens, correct, generated ids) onto every rank, in schedule order,
// and each length's seconds summed over the ranks. Ids and counts are exact as doubles.
void gather_trials(Comm& comm, const std::vector<ScheduledTrial>& schedule, const std::vector<int64_t>& counts,
                   std::vector<PasskeyPoint>& points, std::vector<double>& seconds) {
  size_t most_ids = 0;
  for (const PasskeyPoint& p : points)
    for (const PasskeyTrial& t : p.trials) most_ids = std::max(most_ids, t.answer_ids.size());
  const int64_t fields = 3 + int64_t(most_ids);  // prompt_tokens, correct, generated count, generated ids
  std::vector<int64_t> field_counts;
  for (int64_t c : counts) field_counts.push_back(c * fields);
  std::vector<double> all(schedule.size() * size_t(fields), 0.0);
  const size_t first = size_t(split_offset(counts, comm.rank()));
  for (size_t j = first; j < first + size_t(counts[size_t(comm.rank())]); ++j) {
    const PasskeyTrial& t = points[schedule[j].length].trials[size_t(schedule[j].seed)];
    LL_ASSERT(t.generated.size() <= most_ids, "passkey: more generated ids than the longest answer");
    double* f = all.data() + j * size_t(fields);
    f[0] = double(t.prompt_tokens), f[1] = t.correct ? 1 : 0, f[2] = double(t.generated.size());
    std::copy(t.generated.begin(), t.generated.end(), f + 3);
  }
  comm.all_gather_in_place(Tensor(all.data(), DType::F64, Device::CPU, {int64_t(all.size())}), field_counts);
  comm.all_reduce_sum(Tensor(seconds.data(), DType::F64, Device::CPU, {int64_t(seconds.size())}));
  for (size_t j = 0; j < schedule.size(); ++j) {
    PasskeyTrial& t = points[schedule[j].length].trials[size_t(schedule[j].seed)];
    const double* f = all.data() + j * size_t(fields);
    t.prompt_tokens = int64_t(f[0]);
    t.correct = f[1] != 0;
    t.generated.assign(f + 3, f + 3 + int64_t(f[2]));
  }
}

// A length's summary from its trials.
void summarize_point(PasskeyPoint& pt, double seconds) {
  int64_t total = 0, passed = 0;
  for (const PasskeyTrial& t : pt.trials) total += t.prompt_tokens, passed += t.correct;
  const int64_t n = int64_t(pt.trials.size());
  pt.mean_prompt_tokens = double(total) / double(n);
  pt.reference_tokens = total / n;
  pt.accuracy = double(passed) / double(n);
  pt.seconds = seconds;
}

}  // namespace

std::vector<PasskeyPoint> run_passkey(Model& model, const Tokenizer& tok, const PasskeyOptions& o,
                                      const std::function<void(const PasskeyPoint&)>& on_point,
                                      const std::function<void(int64_t, int64_t)>& progress, Comm* comm) {
  LL_CHECK(o.num_tests >= 1, "--num_tests must be >= 1, got ", o.num_tests);
  const std::vector<int64_t> lengths = passkey_garbage_lengths(o.max_tokens, o.interval);
  const int64_t vocab = model.options().config.vocab_size;
  for (int64_t n : lengths) prompt_facts(n, 0);  // length errors before any work

  // Every trial's prompt facts (cheap: no prompt text or tokenisation), and the schedule one rank runs: length by
  // length, longest filler prefix first, so that each next prompt's prefix is a prefix of the cached one.
  std::vector<PasskeyPoint> points(lengths.size());
  std::vector<std::vector<PasskeyPrompt>> facts(lengths.size());
  std::vector<ScheduledTrial> schedule;
  std::vector<int64_t> weights;  // filler characters: known up front, and roughly proportional to the work
  for (size_t i = 0; i < lengths.size(); ++i) {
    PasskeyPoint& pt = points[i];
    pt.n_garbage = lengths[i];
    pt.trials.resize(size_t(o.num_tests));
    for (int64_t seed = 0; seed < o.num_tests; ++seed) {
      const PasskeyPrompt& p = facts[i].emplace_back(prompt_facts(lengths[i], uint32_t(seed)));
      PasskeyTrial& tr = pt.trials[size_t(seed)];
      tr.seed = seed;
      tr.pass_key = p.pass_key;
      tr.n_prefix = p.n_prefix;
      tr.depth = p.depth;
      tr.answer_ids = tok.encode(p.answer, false, false);  // tokenizer(answer).input_ids[:, 1:]
    }
    std::vector<int64_t> order(size_t(o.num_tests));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return pt.trials[size_t(a)].n_prefix > pt.trials[size_t(b)].n_prefix; });
    for (int64_t seed : order) schedule.push_back({i, seed}), weights.push_back(lengths[i]);
  }

  // The KV cache is sized for the longest length's prompts (+ answer); shorter lengths are tokenised lazily.
  std::vector<std::vector<int32_t>> longest;
  int64_t capacity = 0;
  for (int64_t seed = 0; seed < o.num_tests; ++seed) {
    longest.push_back(prompt_ids(tok, facts.back()[size_t(seed)], vocab));
    capacity = std::max(capacity, needed_tokens(longest.back(), points.back().trials[size_t(seed)]));
  }
  InferenceSession session(model, capacity);

  // Several ranks: each runs a contiguous range of the schedule (about equal filler characters) with its own KV
  // cache; the outcomes are gathered and the points summarised as one rank does.
  const int ranks = comm ? comm->size() : 1, rank = comm ? comm->rank() : 0;
  const std::vector<int64_t> counts = split_by_weight(weights, ranks);
  const size_t first = size_t(split_offset(counts, rank)), end = first + size_t(counts[size_t(rank)]);
  int64_t total_chars = 0, done_chars = 0;
  for (size_t j = first; j < end; ++j) total_chars += weights[j];
  std::vector<double> seconds(lengths.size(), 0.0);
  for (size_t j = first; j < end; ++j) {
    const size_t i = schedule[j].length;
    const auto t0 = std::chrono::steady_clock::now();
    const size_t seed = size_t(schedule[j].seed);
    std::vector<int32_t> current;
    const std::vector<int32_t>& ids =
        i + 1 == lengths.size() ? longest[seed] : (current = prompt_ids(tok, facts[i][seed], vocab));
    PasskeyTrial& tr = points[i].trials[seed];
    LL_CHECK(needed_tokens(ids, tr) <= capacity, "passkey: a prompt of ", lengths[i], " filler characters has ",
             needed_tokens(ids, tr), " tokens, more than the longest length's ", capacity);
    tr.prompt_tokens = int64_t(ids.size());
    tr.correct = passkey_trial(session, ids, tr.answer_ids, &tr.generated, o.reuse_prefix);
    seconds[i] += std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    done_chars += lengths[i];
    if (progress) progress(done_chars, total_chars);
    const bool last_of_length = j + 1 == schedule.size() || schedule[j + 1].length != i;
    if (ranks == 1 && last_of_length) {  // one rank: each length is reported as soon as it is done
      summarize_point(points[i], seconds[i]);
      if (on_point) on_point(points[i]);
    }
  }
  if (ranks > 1) {
    gather_trials(*comm, schedule, counts, points, seconds);
    for (size_t i = 0; i < points.size(); ++i) {
      summarize_point(points[i], seconds[i]);
      if (on_point) on_point(points[i]);
    }
  }
  return points;
}

}  // namespace ll
