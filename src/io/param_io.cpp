#include "io/param_io.h"

#include <algorithm>

#include "tensor_host.h"
#include "util/error.h"

namespace ll {

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

std::string name_list(const std::vector<std::string>& names, size_t limit) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += str_cat(", … and ", names.size() - limit, " more");
  return s;
}

bool is_lora(const Param& p) { return p.kind == ParamKind::LoraA || p.kind == ParamKind::LoraB; }

void load_entry(Backend& backend, Param& p, const SafetensorsEntry& e, const std::string& file,
                const std::string& hint) {
  if (e.shape != p.shape)
    fail(file, ": tensor `", e.name, "` has shape ", shape_text(e.shape), " but the model's `", p.name, "` is ",
         shape_text(p.shape), hint);
  LL_CHECK(e.dtype != DType::I32, file, ": tensor `", e.name, "` is I32; weights must be BF16, F16, F32 or F64");
  std::vector<unsigned char> staging(p.value.nbytes());
  convert_values(e.data, e.dtype, staging.data(), p.value.dtype, size_t(p.numel()));
  backend.copy_from_host(p.value, staging.data());
}

HostTensors host_copies(const std::vector<Param*>& params, Backend& backend, DType dtype, const std::string& prefix) {
  std::vector<Param*> sorted = params;
  std::sort(sorted.begin(), sorted.end(), [](const Param* a, const Param* b) { return a->name < b->name; });
  HostTensors out;
  out.buffers.reserve(sorted.size());
  for (Param* p : sorted) {
    std::vector<unsigned char> raw(p->value.nbytes());
    backend.copy_to_host(raw.data(), p->value);
    out.buffers.emplace_back(size_t(p->numel()) * dtype_size(dtype));
    convert_values(raw.data(), p->value.dtype, out.buffers.back().data(), dtype, size_t(p->numel()));
    out.items.push_back({prefix + p->name, dtype, p->shape, out.buffers.back().data()});
  }
  return out;
}

void write_params(const std::string& path, const std::vector<Param*>& params, Backend& backend, DType dtype,
                  const std::string& prefix) {
  write_safetensors(path, host_copies(params, backend, dtype, prefix).items);
}

void refuse_pickle(const std::string& pickle_path, const std::string& safetensors_name) {
  const std::string dir = pickle_path.substr(0, pickle_path.rfind('/') + 1);
  fail(pickle_path, ": is a PyTorch pickle, which this engine does not read (unpickling runs arbitrary code). "
       "Convert it once with:\n  python3 -c \"import sys, torch; from safetensors.torch import save_file; "
       "save_file({k: v.contiguous() for k, v in torch.load(sys.argv[1], map_location='cpu').items()}, sys.argv[2], "
       "metadata={'format': 'pt'})\" ",
       pickle_path, " ", dir + safetensors_name);
}

}  // namespace ll
