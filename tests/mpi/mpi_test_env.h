// The world communicator of the multi-rank test binary (set by mpi_main.cpp).
#pragma once
#include "mpi/comm.h"

namespace ll::test {
extern Comm* g_comm;
}
