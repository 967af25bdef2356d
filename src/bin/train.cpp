// build/train: LongLoRA fine-tuning (LoRA / LoRA+ / full) with the flag names of LongLoRA's fine-tune.py and
// supervised-fine-tune.py. With no flags at all it runs the embedded CPU demo (see src/train/demo.h).
#include <cstdio>
#include <memory>
#include <string>

#include "mpi/comm.h"
#include "train/longlora_flags.h"
#include "train/demo.h"
#include "train/train_flags.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/flags.h"

int main(int argc, char** argv) {
  std::unique_ptr<ll::Comm> comm;
  try {
    comm = ll::make_world_comm();  // several ranks when started by mpirun / srun
    if (argc == 1) return ll::run_demo(ll::DemoOptions{});
    ll::TrainOptions o;
    ll::Flags flags("train",
                    "LongLoRA fine-tuning: position interpolation + S2-Attn + LoRA/LoRA+ or full fine-tuning.\n"
                    "Run without flags for the embedded CPU demo.");
    ll::add_train_flags(flags, o);
    ll::LongLoraScriptFlags script;  // LongLoRA's / Hugging Face's vocabulary, mapped or ignored
    ll::add_longlora_script_flags(flags, script);
    if (!flags.parse(argc, argv)) return 0;
    for (const std::string& note : ll::apply_longlora_script_flags(script, flags, o))
      if (comm->rank() == 0) std::fprintf(stderr, "%s\n", note.c_str());
    const ll::TrainResult r = ll::run_training(o, flags.values(), comm.get());
    if (comm->rank() == 0)
      std::printf("%s after %lld steps; last loss %.4f; outputs in %s\n", r.interrupted ? "interrupted" : "finished",
                  (long long)r.steps, r.last_loss, r.output_dir.c_str());
    // Stopped by SIGTERM/SIGINT after saving: 128 + signal (143, 130), as for a process the signal ended, so that
    // wrappers and schedulers tell a preempted run from a finished one.
    return r.interrupted ? 128 + r.stop_signal : 0;
  } catch (const std::exception& e) {
    // With several ranks, one failure must end them all (peers would otherwise wait in a collective forever).
    std::string message = ll::exception_message(e);
    if (message.rfind("train: ", 0) == 0) message.erase(0, 7);  // Flags' messages already name the program
    if (comm && comm->size() > 1) comm->abort(1, "train: error: " + message);
    std::fprintf(stderr, "train: error: %s\n", message.c_str());
    return 1;
  }
}
