// run_training: set-up, the loop, then the export (train/session.h holds what the three share).
#include "train/trainer.h"

#include "train/session.h"

namespace ll {

TrainResult run_training(const TrainOptions& options, const nlohmann::json& flags, Comm* comm) {
  const std::unique_ptr<TrainingSession> session = set_up_training(options, flags, comm);
  TrainResult result = run_training_loop(*session);
  if (!result.interrupted) export_trained_model(*session);  // an interrupted run leaves its checkpoint
  return result;
}

}  // namespace ll
