// `build/eval perplexity`: the command's numbers equal LongLoRA's eval.py run with transformers on the same tiny
// model and token file (tests/fixtures/perplexity_reference.json, scripts/make_perplexity_fixture.py); adapters
// applied without merging equal a merged model scored independently; window and flag edge cases.
#include <gtest/gtest.h>

#include <cmath>
#include <sstream>

#include "eval/command_flags.h"
#include "eval/commands.h"
#include "eval/eval_model.h"
#include "eval/perplexity.h"
#include "eval_test_util.h"
#include "io/merge.h"
#include "util/error.h"
#include "util/flags.h"

namespace ll {
namespace {

nlohmann::json reference() {
  std::ifstream in(test::fixtures_dir() + "/perplexity_reference.json");
  EXPECT_TRUE(in.good()) << "missing tests/fixtures/perplexity_reference.json (scripts/make_perplexity_fixture.py)";
  return nlohmann::json::parse(in);
}

using test::error_of;

PerplexityCommand command_for(const nlohmann::json& c, const std::string& base) {
  PerplexityCommand p;
  p.common.base_model = base;
  p.common.context_size = c["context_size"];
  p.common.progress = false;
  p.data_path = test::fixtures_dir() + "/ppl_tokens.bin";
  p.seq_len = c["seq_len"];
  p.batch_size = c["batch_size"];
  p.sliding_window = c["sliding_window"];
  p.drop_last = c["drop_last"];
  return p;
}

void expect_matches(const nlohmann::json& got, const nlohmann::json& want, const std::string& name) {
  EXPECT_EQ(got["num_windows"], want["num_windows"]) << name;
  EXPECT_EQ(got["tokens_scored"], want["tokens_scored"]) << name;
  EXPECT_NEAR(got["loss"].get<double>(), want["val_loss"].get<double>(), 2e-6) << name;
  EXPECT_NEAR(got["perplexity"].get<double>() / want["val_perplexity"].get<double>(), 1.0, 2e-6) << name;
  EXPECT_NEAR(got["perplexity_token_weighted"].get<double>() / want["perplexity_token_weighted"].get<double>(), 1.0,
              2e-6)
      << name;
  // Python averages in float32; one flipped argmax would move these by >= 1/(3·48).
  EXPECT_NEAR(got["accuracy"].get<double>(), want["accuracy"].get<double>(), 1e-7) << name;
  EXPECT_NEAR(got["accuracy_eval_py"].get<double>(), want["val_acc"].get<double>(), 1e-6) << name;
  EXPECT_EQ(got["model"]["rope_scaling_factor"].get<double>(), want["expected_factor"].get<double>()) << name;
}

TEST(EvalPerplexity, MatchesEvalPyWithTransformers) {
  const nlohmann::json ref = reference();
  ASSERT_EQ(ref["cases"].size(), 3u);
  for (const auto& c : ref["cases"]) {
    test::TempDir dir;
    const std::string base = test::copy_hf_tiny(dir.path(), c["strip_rope_scaling"]);
    std::ostringstream out, log;
    const nlohmann::json got = run_perplexity_command(command_for(c, base), out, log);
    std::printf("%s: %s", c["name"].get<std::string>().c_str(), out.str().c_str());
    expect_matches(got, c, c["name"]);
  }
}

TEST(EvalPerplexity, BinaryWritesTheSameJson) {
  const std::string bin = test::eval_binary();
  if (bin.empty()) GTEST_SKIP() << "no eval binary next to the test binary (build with `make all`)";
  const nlohmann::json c = reference()["cases"][0];
  test::TempDir dir;
  const std::string json = dir.file("ppl.json");
  std::string output;
  const int rc = test::run_command(bin + " perplexity --base_model " + test::fixtures_dir() + "/hf_tiny --data_path " +
                                       test::fixtures_dir() + "/ppl_tokens.bin --seq_len 48 --batch_size 3 --json " +
                                       json + " --progress false",
                                   &output);
  ASSERT_EQ(rc, 0) << output;
  EXPECT_NE(output.find("perplexity_token_weighted"), std::string::npos) << output;
  expect_matches(nlohmann::json::parse(read_text_file(json)), c, "binary");

  // Errors name the flag or file and exit non-zero.
  EXPECT_EQ(test::run_command(bin + " perplexity --seq_lne 4", &output), 1);
  EXPECT_NE(output.find("did you mean `--seq_len`"), std::string::npos) << output;
  EXPECT_EQ(test::run_command(bin + " perplexity --base_model " + test::fixtures_dir() + "/hf_tiny --data_path " +
                                  test::fixtures_dir() + "/ppl_tokens.bin --seq_len 1400 --progress false",
                              &output),
            1);
  EXPECT_NE(output.find("ppl_tokens.bin"), std::string::npos) << output;
  EXPECT_NE(output.find("too few for one window"), std::string::npos) << output;
  EXPECT_EQ(test::run_command(bin + " perplexty", &output), 1);
  EXPECT_NE(output.find("did you mean `perplexity`"), std::string::npos) << output;
  EXPECT_EQ(test::run_command(bin + " passkey --help", &output), 0);
  EXPECT_NE(output.find("--num_tests"), std::string::npos) << output;
}

TEST(EvalPerplexity, MaxWindowsIsReportedAsPartial) {
  const nlohmann::json c = reference()["cases"][0];
  PerplexityCommand p = command_for(c, test::fixtures_dir() + "/hf_tiny");
  p.max_windows = 2;
  std::ostringstream out, log;
  const nlohmann::json got = run_perplexity_command(p, out, log);
  EXPECT_EQ(got["num_windows"], 2);
  EXPECT_EQ(got["total_windows"], c["num_windows"]);
  EXPECT_TRUE(got["partial"].get<bool>());
  EXPECT_NE(out.str().find("of 5 (--max_windows)"), std::string::npos) << out.str();
  // The first batch of 2 windows: eval.py's first batch loss is over 3 windows, so compare with a direct run.
  p.max_windows = 0;
  p.batch_size = 2;
  const nlohmann::json all = run_perplexity_command(p, out, log);
  EXPECT_FALSE(all["partial"].get<bool>());
  EXPECT_EQ(all["num_windows"], 5);
}

TEST(EvalPerplexity, ClearErrorsForBadInput) {
  test::TempDir dir;
  const std::string tiny = test::fixtures_dir() + "/hf_tiny";
  PerplexityCommand p;
  p.common.base_model = tiny;
  p.common.progress = false;
  p.seq_len = 16;
  std::ostringstream out, log;
  EXPECT_NE(error_of([&] { run_perplexity_command(p, out, log); }).find("--data_path is required"), std::string::npos);
  p.data_path = dir.file("missing.bin");
  EXPECT_NE(error_of([&] { run_perplexity_command(p, out, log); }).find("missing.bin"), std::string::npos);
  // Shorter than one window plus the dropped last start.
  p.data_path = dir.file("short.bin");
  test::write_tokens(p.data_path, std::vector<int32_t>(30, 3));
  std::string msg = error_of([&] { run_perplexity_command(p, out, log); });
  EXPECT_NE(msg.find("short.bin"), std::string::npos) << msg;
  EXPECT_NE(msg.find("too few for one window"), std::string::npos) << msg;
  // 33 tokens, seq_len 16, stride 16: starts 0, 16 → 16 popped → one window; without the pop, two.
  test::write_tokens(p.data_path, std::vector<int32_t>(33, 3));
  p.sliding_window = 16;
  EXPECT_EQ(run_perplexity_command(p, out, log)["num_windows"], 1);
  p.drop_last = false;
  EXPECT_EQ(run_perplexity_command(p, out, log)["num_windows"], 2);
  // An id outside the model's vocabulary (hf_tiny: 37) names the file.
  test::write_tokens(p.data_path, std::vector<int32_t>(40, 37));
  msg = error_of([&] { run_perplexity_command(p, out, log); });
  EXPECT_NE(msg.find("short.bin"), std::string::npos) << msg;
  p.seq_len = 1;
  EXPECT_NE(error_of([&] { run_perplexity_command(p, out, log); }).find("--seq_len"), std::string::npos);
  p.seq_len = 16;
  p.common.rope_scaling_factor = INFINITY;  // used to pass the `0 or >= 1` check
  EXPECT_EQ(error_of([&] { run_perplexity_command(p, out, log); }),
            "eval perplexity: --rope_scaling_factor must be a finite number >= 0, got inf");
  p.common.rope_scaling_factor = 0;
  p.common.base_model = dir.file("nope");
  EXPECT_NE(error_of([&] { run_perplexity_command(p, out, log); }).find("--base_model"), std::string::npos);
  p.common.base_model = tiny;
  p.common.device = "cuda-x";
  EXPECT_NE(error_of([&] { run_perplexity_command(p, out, log); }).find("cuda-x"), std::string::npos);
}

// Independent: hf_tiny + [PAD] + adapter merged into the weights, windows scored one at a time through logits().
// --sliding_window is LongLoRA eval.py's stride between evaluation windows, not Mistral's attention window
// (config.json's sliding_window): the help and the JSON say so, and passing it for a windowed model prints a note.
TEST(EvalPerplexity, SlidingWindowIsTheStrideNotTheModelsAttentionWindow) {
  PerplexityCommand p;
  Flags flags("eval perplexity", "");
  add_perplexity_flags(flags, p);
  EXPECT_NE(flags.help().find("the STRIDE between evaluation windows"), std::string::npos) << flags.help();
  test::TempDir dir;
  p.common.base_model = test::fixtures_dir() + "/mistral_tiny";  // sliding_window 5
  p.common.progress = false;
  p.data_path = dir.file("tokens.bin");
  test::write_tokens(p.data_path, std::vector<int32_t>(40, 3));
  p.seq_len = 16;
  p.sliding_window = 8;
  p.sliding_window_given = true;
  std::ostringstream out, log;
  const nlohmann::json j = run_perplexity_command(p, out, log);
  const std::string note = "--sliding_window 8 is the stride between evaluation windows (LongLoRA eval.py's flag); "
                           "this mistral model's attention window (sliding_window 5) comes from its config.json";
  EXPECT_NE(log.str().find(note), std::string::npos) << log.str();
  EXPECT_EQ(j["window_stride"], 8);
  EXPECT_EQ(j["attention_sliding_window"], 5);
  // Left at its default: no note. A model without an attention window: no note, no attention_sliding_window.
  p.sliding_window_given = false;
  std::ostringstream quiet;
  run_perplexity_command(p, out, quiet);
  EXPECT_EQ(quiet.str().find("is the stride between evaluation windows"), std::string::npos) << quiet.str();
  p.sliding_window_given = true;
  p.common.base_model = test::fixtures_dir() + "/hf_tiny";
  std::ostringstream llama;
  const nlohmann::json l = run_perplexity_command(p, out, llama);
  EXPECT_EQ(llama.str().find("is the stride between evaluation windows"), std::string::npos) << llama.str();
  EXPECT_FALSE(l.contains("attention_sliding_window"));
}

TEST(EvalPerplexity, AdapterWithoutMergingEqualsMergedWeights) {
  test::TempDir adapter;
  const std::string tiny = test::fixtures_dir() + "/hf_tiny";
  test::write_random_adapter(adapter.path(), tiny, 38, 5, LongLoraRecord{4.0, 256, 38});
  const nlohmann::json c = reference()["cases"][0];
  PerplexityCommand p = command_for(c, tiny);
  p.common.peft_model = adapter.path();
  std::ostringstream out, log;
  const nlohmann::json got = run_perplexity_command(p, out, log);
  EXPECT_EQ(got["model"]["vocab_size"], 38);
  EXPECT_TRUE(got["model"]["pad_row_added"].get<bool>());
  EXPECT_EQ(got["model"]["rope_scaling_factor"], 4.0);  // longlora.json, not hf_tiny's 2
  EXPECT_NE(log.str().find("not merged"), std::string::npos) << log.str();

  std::unique_ptr<Backend> backend = create_backend("cpu-f64");
  ModelOptions mo;
  mo.config = read_hf_config(tiny).model;
  mo.config.vocab_size = 38;
  mo.config.rope_scaling_factor = 4.0;
  mo.lora = read_adapter_config(adapter.path(), mo.config).lora;
  mo.batch = 1;
  mo.seq_len = 48;
  Model model(*backend, mo);
  load_hf_weights(tiny, model.params(), *backend, {true});
  load_adapter(adapter.path(), model.params(), *backend);
  merge_lora(model.params(), *backend, mo.lora);
  const TokenFile data(p.data_path, 38);
  std::vector<int32_t> ids(size_t(data.size()));
  data.read(0, data.size(), ids.data());
  const std::vector<int64_t> starts = perplexity_window_starts(data.size(), 48, 256, true);
  double sum_means = 0, sum_all = 0;
  int64_t count = 0, batches = 0;
  for (size_t first = 0; first < starts.size(); first += 3, ++batches) {
    double batch_sum = 0;
    int64_t batch_count = 0;
    for (size_t w = first; w < std::min(starts.size(), first + 3); ++w) {
      const std::vector<double> logits = model.logits(ids.data() + starts[w]);
      for (int64_t l = 0; l + 1 < 48; ++l) {
        const double* row = logits.data() + l * 38;
        double mx = row[0], z = 0;
        for (int j = 1; j < 38; ++j) mx = std::max(mx, row[j]);
        for (int j = 0; j < 38; ++j) z += std::exp(row[j] - mx);
        batch_sum += mx + std::log(z) - row[ids[size_t(starts[w] + l + 1)]], ++batch_count;
      }
    }
    sum_means += batch_sum / double(batch_count), sum_all += batch_sum, count += batch_count;
  }
  EXPECT_NEAR(got["loss"].get<double>(), sum_means / double(batches), 2e-6);
  EXPECT_NEAR(got["perplexity_token_weighted"].get<double>() / std::exp(sum_all / double(count)), 1.0, 2e-6);
}

}  // namespace
}  // namespace ll
