// libFuzzer target for the safetensors reader (src/io/safetensors.cpp): `make fuzz` builds it with clang
// (-fsanitize=fuzzer,address,undefined) into build/fuzz/ and runs it for FUZZ_SECONDS on a copy of
// tests/fuzz/corpus_safetensors/.
//
// Each input is the whole content of a file. It is written to an anonymous in-memory file (memfd) that the reader
// opens by its /proc/self/fd path, exactly as it opens any file (open, fstat, mmap). Every accepted entry's bytes
// are read and every accessor is called. ll::Error is the reader's documented way to reject a file and is
// swallowed; anything else — a crash, a sanitizer report, an exception of another type — is a finding.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "io/safetensors.h"

namespace {

int memory_file() {
  static const int fd = [] {
    const int f = ::memfd_create("fuzz_safetensors", MFD_CLOEXEC);
    if (f < 0) {
      std::perror("memfd_create");
      std::abort();
    }
    return f;
  }();
  return fd;
}

void set_contents(int fd, const uint8_t* data, size_t size) {
  if (::ftruncate(fd, 0) != 0) std::abort();
  size_t done = 0;
  while (done < size) {
    const ssize_t w = ::pwrite(fd, data + done, size - done, off_t(done));
    if (w <= 0) std::abort();
    done += size_t(w);
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = memory_file();
  set_contents(fd, data, size);
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  try {
    ll::SafetensorsFile file(path);
    uint64_t checksum = 0;
    for (const auto& [key, value] : file.metadata()) checksum += key.size() + value.size();
    for (const std::string& name : file.names()) {
      const ll::SafetensorsEntry& e = file.entry(name);
      const auto* bytes = static_cast<const unsigned char*>(e.data);
      for (size_t i = 0; i < e.nbytes; ++i) checksum += bytes[i];  // ASan flags any read outside the mapping
      if (!file.contains(name)) std::abort();
      try {
        const ll::Tensor t = file.tensor(name);
        if (t.nbytes() != e.nbytes) std::abort();  // the view must cover exactly the entry's bytes
      } catch (const ll::Error&) {
        // more dims than a Tensor holds: a documented rejection
      }
    }
    ll::SafetensorsFile moved(std::move(file));  // the move must keep the views valid
    for (const std::string& name : moved.names()) {
      const ll::SafetensorsEntry& e = moved.entry(name);
      if (e.nbytes > 0) checksum += static_cast<const unsigned char*>(e.data)[e.nbytes - 1];
    }
    volatile uint64_t sink = checksum;
    (void)sink;
  } catch (const ll::Error&) {
    // rejected with the reader's error type: expected for most inputs
  }
  return 0;
}
