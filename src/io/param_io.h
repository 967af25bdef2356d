// Helpers shared by the HF-folder and PEFT-adapter readers and writers: moving parameters between safetensors
// files and a ParamStore, and error-message formatting.
#pragma once
#include <string>
#include <vector>

#include "core/backend.h"
#include "io/safetensors.h"
#include "model/params.h"

namespace ll {

// Up to `limit` comma-separated names, then "… and N more".
std::string name_list(const std::vector<std::string>& names, size_t limit = 12);

// What a reader says about a NaN or ±inf in a weight file.
inline constexpr char kNonFiniteInFile[] =
    "weights must be finite (the file is damaged, or was saved from a run that diverged)";
// Throws when the host values of tensor `name` (`shape`, `type`) hold a NaN or ±inf: "<context>: `<name>` holds nan
// at [i,j] of [rows,cols] (dtype); <advice>". Weights are checked this way wherever they are read or written.
void check_finite_values(const void* data, DType type, const std::vector<int64_t>& shape, const std::string& context,
                         const std::string& name, const std::string& advice);
// convert_values of a whole tensor, block by block, each converted block checked while still in cache (next to
// free, even where the conversion is a plain copy): a NaN or ±inf in `src` throws as check_finite_values does, a
// finite value that `dst_type` cannot hold throws naming both dtypes.
void convert_checked(const void* src, DType src_type, void* dst, DType dst_type, const std::vector<int64_t>& shape,
                     const std::string& context, const std::string& name, const std::string& advice);

// Copies the entry (BF16/F16/F32/F64) into p.value, converted to its dtype. Throws naming `file` and the tensor when
// the shapes differ (`hint` is appended), the entry is not floating point, or it holds a NaN or ±inf (or a value
// the parameter's dtype cannot hold).
void load_entry(Backend& backend, Param& p, const SafetensorsEntry& e, const std::string& file,
                const std::string& hint = "");

// Host copies of parameters converted to `dtype`, named `prefix + p.name`, in name order (as Python's safetensors
// writer lays out same-dtype tensors); `items` point into `buffers`. One copy can feed several writers.
struct HostTensors {
  HostTensors() = default;
  HostTensors(HostTensors&&) = default;  // moving keeps each buffer (and so the items' pointers) in place
  HostTensors& operator=(HostTensors&&) = default;
  HostTensors(const HostTensors&) = delete;  // a copy's items would point into the original's buffers
  HostTensors& operator=(const HostTensors&) = delete;

  std::vector<std::vector<unsigned char>> buffers;
  std::vector<SafetensorsWriteItem> items;
};
// Refuses (before anything is written) a parameter holding a NaN or ±inf, or a value `dtype` cannot hold, naming
// `destination` (the file the copies are for) and the tensor.
HostTensors host_copies(const std::vector<Param*>& params, Backend& backend, DType dtype, const std::string& destination,
                        const std::string& prefix = "");

// Writes host_copies(...) to one safetensors file (atomic). Host memory: one converted copy of the parameters.
void write_params(const std::string& path, const std::vector<Param*>& params, Backend& backend, DType dtype,
                  const std::string& prefix = "");

// A folder entry that exists only as a PyTorch pickle is refused: names it and gives a one-line conversion.
[[noreturn]] void refuse_pickle(const std::string& pickle_path, const std::string& safetensors_name);

}  // namespace ll
