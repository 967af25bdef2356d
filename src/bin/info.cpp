// build/info: lists the backends of this build and the CUDA devices of this machine; `info FOLDER` describes the
// model of a Hugging Face folder (its config.json) instead.
#include <cstdio>
#include <cstring>
#include <exception>

#include "core/backend.h"
#include "io/hf_config.h"
#include "model/describe.h"
#include "util/error.h"

int main(int argc, char** argv) {
  if (argc > 1 && (std::strcmp(argv[1], "--help") == 0 || std::strcmp(argv[1], "-h") == 0)) {
    std::printf("usage: info [FOLDER]\n  Lists the compute backends of this build, whether each can run on this machine, "
                "and why.\n  With FOLDER (a Hugging Face model folder): its architecture from config.json (model_type, "
                "class, sizes, attention, RoPE, residual form, parameter count).\n");
    return 0;
  }
  if (argc > 2 || (argc == 2 && argv[1][0] == '-')) {
    std::fprintf(stderr, "info: unexpected argument `%s` (info takes at most one model folder; see --help)\n",
                 argv[argc - 1]);
    return 2;
  }
  if (argc == 2) {
    try {
      const ll::HfConfig config = ll::read_hf_config(argv[1]);
      std::printf("folder: %s\n%s", argv[1], ll::describe_model(config.model).c_str());
      if (!config.info.torch_dtype.empty()) std::printf("torch_dtype: %s\n", config.info.torch_dtype.c_str());
    } catch (const std::exception& e) {
      std::fprintf(stderr, "info: error: %s\n", ll::exception_message(e).c_str());
      return 1;
    }
    return 0;
  }
  for (const ll::BackendInfo& b : ll::list_backends())
    std::printf("%-8s %-11s %s\n", b.name.c_str(), b.available ? "available" : "unavailable", b.description.c_str());
  return 0;
}
