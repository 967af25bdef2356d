// run_training_loop: the steps of a run (see train/session.h), with logging, checkpoints and stop signals.
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdio>
#include <cstdlib>

#include "core/dropout_mask.h"
#include "train/metrics_log.h"
#include "mpi/rank_agreement.h"
#include "train/session.h"
#include "util/files.h"

namespace ll {

namespace {

std::atomic<int> g_stop_signal{0};
extern "C" void on_stop_signal(int sig) { g_stop_signal = sig; }

// Installs SIGINT/SIGTERM handlers for the lifetime of a run, restoring the previous ones afterwards.
class StopSignals {
 public:
  StopSignals() {
    g_stop_signal = 0;
    struct sigaction sa {};
    sa.sa_handler = on_stop_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~StopSignals() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "--:--";
  const int64_t s = int64_t(seconds + 0.5);
  char buf[32];
  if (s >= 3600) std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", (long long)(s / 3600), (long long)(s / 60 % 60),
                              (long long)(s % 60));
  else std::snprintf(buf, sizeof buf, "%02lld:%02lld", (long long)(s / 60), (long long)(s % 60));
  return buf;
}

}  // namespace

TrainResult run_training_loop(TrainingSession& s) {
  const TrainOptions& o = s.options;
  Comm* world = s.world;
  Comm& comm = *s.comm;
  Backend& be = *s.be;
  Model& model = *s.model;
  DistributedOptimizer& optimizer = *s.optimizer;
  BatchSource* source = s.source.get();
  ProfilingBackend* profiler = s.profiler.get();
  TrainerState& state = s.state;
  const nlohmann::json& flags = s.flags;
  const bool lead = s.lead;
  const int64_t total_steps = s.total_steps;
  const ScheduleConfig& schedule = s.schedule;

  StopSignals signals;
  // metrics.jsonl continues the resumed step's trajectory (later records of a killed run are dropped); the flags
  // are recorded once the run is set up.
  MetricsLog metrics;
  agree_on_failure(*world, [&] {  // the host communicator: NCCL's carries device buffers
    if (!lead) return;
    metrics.open(o.output_dir + "/metrics.jsonl", state.global_step);
    write_training_args(o.output_dir, flags);
  });
  const bool tty = lead && ::isatty(::fileno(stderr));
  // Fault-injection hooks for the multi-rank failure tests: at step LONGLORA_FAIL_STEP, rank LONGLORA_FAIL_RANK
  // throws (an ordinary error) and rank LONGLORA_HANG_RANK stops responding.
  const char* fail_rank = std::getenv("LONGLORA_FAIL_RANK");
  const char* hang_rank = std::getenv("LONGLORA_HANG_RANK");
  const char* fail_step = std::getenv("LONGLORA_FAIL_STEP");
  const auto start = std::chrono::steady_clock::now();
  const int64_t first_step = state.global_step;
  int64_t tokens_seen = 0, last_saved = state.global_step;
  TrainResult result;
  result.output_dir = o.output_dir;
  std::vector<HostBatch> micro_batches(size_t(o.gradient_accumulation_steps));  // one step's, read before its forward

  auto save = [&] {
    state.data = source->position();
    save_checkpoint(o.output_dir, model.params(), optimizer, be, comm, state);
    if (lead) rotate_checkpoints(o.output_dir, o.save_total_limit);
    comm.barrier();
    last_saved = state.global_step;
  };

  // Rank 0 prints the op table (percentages of the loop's wall time) and writes output_dir/op_profile.json.
  auto report_profile = [&] {
    if (!profiler) return;
    profiler->set_enabled(false);
    if (!lead) return;
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::fprintf(stderr, "%sop profile of %lld steps (%.3f s; each op synchronised):\n%s", tty ? "\n" : "",
                 (long long)(state.global_step - first_step), wall, profiler->table(wall).c_str());
    const nlohmann::json j = {{"backend", be.name()}, {"steps", state.global_step - first_step},
                              {"wall_seconds", wall}, {"ops", profiler->to_json()}};
    write_file_atomic(o.output_dir + "/op_profile.json", j.dump(2) + "\n");
  };
  if (profiler) profiler->set_enabled(true);
  while (state.global_step < total_steps) {
    if (fail_rank && fail_step && std::atoi(fail_rank) == comm.rank() && std::atoll(fail_step) == state.global_step)
      fail("injected failure at step ", state.global_step, " (LONGLORA_FAIL_RANK/LONGLORA_FAIL_STEP)");
    if (hang_rank && fail_step && std::atoi(hang_rank) == comm.rank() && std::atoll(fail_step) == state.global_step)
      for (;;) ::pause();
    const double lr = lr_at(schedule, state.global_step);
    model.params().zero_grads();
    // The step's loss is the mean of its micro-batches' mean losses (Hugging Face's Trainer) over the micro-batches
    // of every rank that score a target: one without targets must count nothing, not a loss of 0. (None lack them
    // today: SftSource drops examples without targets, pretraining rows all score.) So the step's micro-batches are
    // read first, and `per_rank` — the micro-batches with targets per rank, over the ranks; the accumulation steps
    // when all have targets — divides each micro-batch's mean loss and gradient.
    int64_t with_targets = 0;
    for (HostBatch& b : micro_batches) {
      source->next(b);
      with_targets += b.scored() > 0;
    }
    const double per_rank = comm.all_reduce_sum(double(with_targets)) / double(comm.size());
    LL_CHECK(per_rank > 0, "step ", state.global_step + 1, ": no micro-batch of any rank has a target token");
    double loss = 0;
    for (int64_t micro = 0; micro < o.gradient_accumulation_steps; ++micro) {
      const HostBatch& batch = micro_batches[size_t(micro)];
      model.set_seq_len(batch.seq_len);
      model.set_lora_dropout(true, mix64(uint64_t(o.seed) ^ mix64(uint64_t(state.global_step) * 1000003ull +
                                                                  uint64_t(micro))));
      const int64_t scored = batch.scored();
      const double scale = scored ? 1.0 / (double(scored) * per_rank) : 0.0;
      // Every rank runs every micro-batch, targets or not: ZeRO's collectives run inside forward and backward.
      optimizer.begin_micro_batch(micro + 1 == o.gradient_accumulation_steps);  // ZeRO-2 reduces during its backward
      const LossResult r = model.forward_backward(batch.tokens.data(), batch.targets.data(), scale);
      loss += r.mean() / per_rank;  // 0 without targets
      tokens_seen += batch.batch * batch.seq_len * comm.size();
    }
    loss = comm.all_reduce_sum(loss) / double(comm.size());  // gradients are averaged the same way
    const double grad_norm = optimizer.reduce_and_clip(o.max_grad_norm);
    if (!std::isfinite(loss) || !std::isfinite(grad_norm)) {
      ++state.nonfinite_streak;
      if (lead)
        std::fprintf(stderr, "%swarning: step %lld has a non-finite %s; update skipped (%lld in a row)\n",
                     tty ? "\n" : "", (long long)state.global_step + 1, std::isfinite(loss) ? "gradient" : "loss",
                     (long long)state.nonfinite_streak);
      LL_CHECK(state.nonfinite_streak < o.max_nonfinite_steps, "stopping: ", state.nonfinite_streak,
               " consecutive steps had a non-finite loss or gradient (lower --learning_rate or check the data)");
    } else {
      state.nonfinite_streak = 0;
      optimizer.step(lr);
      // A finite gradient can still overflow a weight (a huge learning rate, a tiny epsilon): such an update is
      // never kept — the run stops here, before any checkpoint or export can hold it.
      const std::string broken = optimizer.first_nonfinite_weight();
      if (!broken.empty())
        fail("step ", state.global_step + 1, " made `", broken, "` non-finite (NaN or inf) at learning rate ", lr,
             " (gradient norm ", grad_norm, "); stopped without saving it (checkpoints already in ", o.output_dir,
             " are unchanged): lower --learning_rate (or set --max_grad_norm, raise --adam_epsilon)");
    }
    ++state.global_step;
    result.last_loss = loss;

    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    const double tok_per_s = double(tokens_seen) / std::max(elapsed, 1e-9);
    const int64_t done = state.global_step - first_step;
    const double eta = elapsed / double(done) * double(total_steps - state.global_step);
    if (lead && (state.global_step % o.logging_steps == 0 || state.global_step == total_steps)) {
      metrics.append({{"step", state.global_step}, {"loss", loss},          {"lr", lr},
                      {"grad_norm", grad_norm},    {"tokens_per_sec", tok_per_s},
                      {"elapsed_sec", elapsed},    {"epoch", source->position().epoch}});
      if (!tty)
        std::fprintf(stderr, "step %lld/%lld | loss %.4f | lr %.3g | grad norm %.3f | %.0f tok/s | ETA %s\n",
                     (long long)state.global_step, (long long)total_steps, loss, lr, grad_norm, tok_per_s,
                     format_duration(eta).c_str());
    }
    if (tty)
      std::fprintf(stderr, "\rstep %lld/%lld | loss %.4f | lr %.3g | %.0f tok/s | ETA %s   ", (long long)state.global_step,
                   (long long)total_steps, loss, lr, tok_per_s, format_duration(eta).c_str());
    if (o.save_steps > 0 && state.global_step % o.save_steps == 0) save();
    // Ranks may receive the signal at different steps; they agree on stopping at the same one.
    if (state.global_step == o.interrupt_at_step) std::raise(o.interrupt_signal);
    const int stop = int(comm.all_reduce_max(g_stop_signal.load()));
    if (stop) {
      if (lead)
        std::fprintf(stderr, "%ssignal %d: saving a checkpoint at step %lld and stopping\n", tty ? "\n" : "", stop,
                     (long long)state.global_step);
      if (last_saved != state.global_step) save();
      report_profile();
      result.interrupted = true;
      result.stop_signal = stop;
      result.steps = state.global_step;
      return result;
    }
  }
  if (tty) std::fprintf(stderr, "\n");
  if (parse_save_strategy(o.save_strategy) != SaveStrategy::No && last_saved != state.global_step) save();
  report_profile();
  result.steps = state.global_step;
  return result;
}

}  // namespace ll
