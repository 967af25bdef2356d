// One training run's state, as src/train/trainer.cpp's three stages share it:
//   set_up_training      flags checked, ranks agreeing, output folder locked, tokenizer, backend (and the NCCL
//                        communicator), model planned against the memory, weights loaded, optimizer, data, resume;
//   run_training_loop    batch → forward → loss → backward → reduce → update → log / checkpoint, until the last step
//                        or a stop signal (train/loop.cpp);
//   export_trained_model the adapter or the HF folder, and the merged folder (train/export.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include <nlohmann/json.hpp>

#include "core/backend.h"
#include "core/profiling_backend.h"
#include "data/token_file.h"
#include "data/tokenizer.h"
#include "io/hf_config.h"
#include "model/model.h"
#include "mpi/comm.h"
#include "mpi/zero.h"
#include "mpi/zero3.h"
#include "train/checkpoint.h"
#include "train/data.h"
#include "train/run_dir.h"
#include "train/schedule.h"
#include "train/trainer.h"

namespace ll {

// What the model is built from.
struct ModelPlan {
  ModelConfig config;
  std::string hf_dir;  // non-empty: load weights from this HF folder
  HfConfigInfo info;
  bool add_pad = false;
};

// Members are declared in the order set-up creates them and are destroyed in reverse: in particular the NCCL
// communicator goes after everything that communicates (model, ZeRO storage, optimizer) and before the backend whose
// stream it is ordered against.
struct TrainingSession {
  TrainOptions options;
  nlohmann::json flags;                      // the resolved flags (training_args.json, checkpoints)
  std::unique_ptr<Comm> own_world;           // a single-process communicator when none was given
  Comm* world = nullptr;                     // the host communicator (every rank of the job)
  bool lead = false;                         // rank 0: prints, writes metrics and exports
  std::unique_ptr<OutputDirLock> output_lock;  // rank 0: held for the whole run
  std::unique_ptr<Tokenizer> tokenizer;      // when the run has one (SFT needs it; [PAD] rule)
  ModelPlan plan;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Comm> device_comm;         // NCCL or StagedComm between GPU ranks (device buffers), or none
  std::string comm_why;                      // several ranks: which communicator --comm chose, and why
  std::unique_ptr<ProfilingBackend> profiler;  // --profile_ops
  Backend* be = nullptr;                     // what the run computes on: the profiler or the backend
  Comm* comm = nullptr;                      // what gradients travel over: device_comm or world
  ModelOptions model_options;
  std::unique_ptr<Model> model;
  std::unique_ptr<Zero3Storage> zero3;       // --zero_stage 3
  std::unique_ptr<DistributedOptimizer> optimizer;
  std::shared_ptr<const TokenFile> token_file;
  std::unique_ptr<BatchSource> source;
  int64_t rows_per_step = 0;                 // rows per optimizer step over every rank
  int64_t total_steps = 0;
  ScheduleConfig schedule;
  TrainerState state;                        // step, data position, counters (restored on resume)
};

// Builds everything a run needs and prints the start-up lines (rank 0); throws ll::Error naming the flag, file or
// field on bad input, before anything large is allocated where it can tell.
std::unique_ptr<TrainingSession> set_up_training(const TrainOptions& options, const nlohmann::json& flags,
                                                 Comm* world);
// Trains from the session's step to the last one, or until a SIGINT/SIGTERM (saved, then result.interrupted).
TrainResult run_training_loop(TrainingSession& s);
// Rank 0 writes the adapter folder (LoRA) or output_dir/model (full fine-tuning), and output_dir/merged with
// --save_merged; every rank takes part (ZeRO-3 gathers).
void export_trained_model(TrainingSession& s);

}  // namespace ll
