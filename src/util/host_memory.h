// How much host memory a new allocation can take, for the start-up checks that refuse a run before it allocates.
#pragma once
#include <cstddef>

namespace ll {

// Host memory available for new allocations: /proc/meminfo's MemAvailable, else sysconf(_SC_AVPHYS_PAGES) pages;
// 0 when neither is known.
size_t available_host_memory();

}  // namespace ll
