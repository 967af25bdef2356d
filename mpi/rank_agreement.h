// Keeping the ranks of one run in agreement. Every function here is collective: every rank of `comm` calls it.
#pragma once
#include <functional>
#include <string>

#include <nlohmann/json.hpp>

#include "mpi/comm.h"

namespace ll {

// Every rank gets rank `root`'s `text` (over host buffers: call it on the MPI communicator, not NCCL's).
std::string broadcast_text(Comm& comm, const std::string& text, int root);

// Runs `step` on every rank. When it throws on any rank, every rank throws: the lowest failing rank its own
// exception, the others an ll::Error with that rank's message. So a check that only rank 0 makes (the output
// folder) stops every rank with the same message instead of leaving the others waiting in the next collective.
void agree_on_failure(Comm& comm, const std::function<void()>& step);

// The first flag (in name order) whose value differs between `mine` (a flags object, name → value) and
// `reference`, described as "--name is <mine> on rank <my_rank> but <reference's> on rank 0"; "" when they agree.
std::string flag_difference(const nlohmann::json& mine, const nlohmann::json& reference, int my_rank);

// Stops every rank with an error naming the first differing flag and both values when the ranks were given
// different flags (an MPMD launch, `mpirun -np 1 train --a 1 : -np 1 train --a 2`, gives each part its own).
// No flag legitimately differs between ranks: each rank finds its GPU from its local rank, not from a flag.
void check_flags_agree(Comm& comm, const nlohmann::json& flags);

}  // namespace ll
