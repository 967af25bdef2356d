// Helpers shared by the HF-folder and PEFT-adapter readers and writers: moving parameters between safetensors
// files and a ParamStore, and error-message formatting.
#pragma once
#include <string>
#include <vector>

#include "backend.h"
#include "io/safetensors.h"
#include "model/params.h"

namespace ll {

std::string shape_text(const std::vector<int64_t>& shape);  // "[32,8]"
// Up to `limit` comma-separated names, then "… and N more".
std::string name_list(const std::vector<std::string>& names, size_t limit = 12);

bool is_lora(const Param& p);

// Copies the entry (BF16/F16/F32/F64) into p.value, converted to its dtype. Throws naming `file` and the tensor when
// the shapes differ (`hint` is appended) or the entry is not floating point.
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
HostTensors host_copies(const std::vector<Param*>& params, Backend& backend, DType dtype, const std::string& prefix = "");

// Writes host_copies(...) to one safetensors file (atomic). Host memory: one converted copy of the parameters.
void write_params(const std::string& path, const std::vector<Param*>& params, Backend& backend, DType dtype,
                  const std::string& prefix = "");

// A folder entry that exists only as a PyTorch pickle is refused: names it and gives a one-line conversion.
[[noreturn]] void refuse_pickle(const std::string& pickle_path, const std::string& safetensors_name);

}  // namespace ll
