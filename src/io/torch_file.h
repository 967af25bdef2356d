// PyTorch's own file format (what torch.save writes since 1.6), written without PyTorch: a state dict
// {name: tensor} that `torch.load(path, weights_only=True)` returns as a dict of contiguous CPU tensors. Written so
// LongLoRA's scripts, which read `trainable_params.bin` with torch.load, accept our adapter folders (io/peft.h).
//
// The file is a zip of stored entries (io/zip_writer.h) under one folder, `<stem of the file name>/`:
//   data.pkl    pickle protocol 2 of a dict, each value `torch._utils._rebuild_tensor_v2(storage, 0, size, stride,
//               False, collections.OrderedDict())`, the storage a persistent id ('storage', torch.<T>Storage, key,
//               'cpu', numel) — only opcodes and globals torch's weights-only unpickler allows
//   byteorder   "little"
//   data/<key>  the raw little-endian bytes of each tensor, keys "0", "1", … in item order, 64-byte aligned
//   version     "3\n" (the record format version torch.save writes)
// Left out on purpose: `.format_version` / `.storage_alignment` (they let torch compute record offsets from its own
// writer's exact header layout instead of reading them; ours differs, so torch reads the zip directory) and
// `.data/serialization_id` (optional; torch only logs it).
#pragma once
#include <string>
#include <vector>

#include "io/safetensors.h"

namespace ll {

struct TorchFileOptions {
  bool force_zip64 = false;  // zip64 records even for a small file (tests: the path > 4 GiB files take)
};

// Writes atomically (temp file, fsync, rename). Items are the safetensors writer's, so one converted copy of the
// tensors feeds both writers; dtypes F32, F64, BF16, F16, I32 (→ torch.float32 … torch.int32); names unique and
// non-empty. Throws naming the path and the tensor on bad input.
void write_torch_state_dict(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                            const TorchFileOptions& options = {});

}  // namespace ll
