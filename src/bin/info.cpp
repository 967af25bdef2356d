// build/info: lists the backends of this build and the CUDA devices of this machine.
#include <cstdio>
#include <cstring>

#include "core/backend.h"

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf("usage: info\n  Lists the compute backends of this build, whether each can run on this machine, and why.\n");
    return 0;
  }
  if (argc > 1) {
    std::fprintf(stderr, "info: unknown argument `%s` (info takes no arguments; see --help)\n", argv[1]);
    return 2;
  }
  for (const ll::BackendInfo& b : ll::list_backends())
    std::printf("%-8s %-11s %s\n", b.name.c_str(), b.available ? "available" : "unavailable", b.description.c_str());
  return 0;
}
