#include "io/param_io.h"

#include <algorithm>

#include "core/quantize.h"
#include "core/tensor_host.h"
#include "util/error.h"

namespace ll {

std::string name_list(const std::vector<std::string>& names, size_t limit) {
  std::string s;
  for (size_t i = 0; i < names.size() && i < limit; ++i) s += (i ? ", " : "") + names[i];
  if (names.size() > limit) s += str_cat(", … and ", names.size() - limit, " more");
  return s;
}

namespace {

// [i, j, …] of the element at `flat` in a row-major tensor of `shape`.
std::string element_index(size_t flat, const std::vector<int64_t>& shape) {
  std::vector<int64_t> index(shape.size());
  for (size_t d = shape.size(); d-- > 0;) {
    const auto extent = size_t(std::max<int64_t>(shape[d], 1));
    index[d] = int64_t(flat % extent);
    flat /= extent;
  }
  return shape_text(index);
}

size_t element_count(const std::vector<int64_t>& shape) {
  size_t n = 1;
  for (int64_t d : shape) n *= size_t(d);
  return n;
}

[[noreturn]] void fail_nonfinite(const void* data, DType type, size_t index, const std::vector<int64_t>& shape,
                                 const std::string& context, const std::string& name, const std::string& advice) {
  double value = 0;
  convert_values(static_cast<const unsigned char*>(data) + index * dtype_size(type), type, &value, DType::F64, 1);
  fail(context, ": `", name, "` holds ", value, " at ", element_index(index, shape), " of ", shape_text(shape), " (",
       dtype_name(type), "); ", advice);
}

}  // namespace

void check_finite_values(const void* data, DType type, const std::vector<int64_t>& shape, const std::string& context,
                         const std::string& name, const std::string& advice) {
  const size_t count = element_count(shape), bad = find_nonfinite(data, type, count);
  if (bad != count) fail_nonfinite(data, type, bad, shape, context, name, advice);
}

void convert_checked(const void* src, DType src_type, void* dst, DType dst_type, const std::vector<int64_t>& shape,
                     const std::string& context, const std::string& name, const std::string& advice) {
  LL_CHECK(is_dense_float(src_type) && is_dense_float(dst_type), "convert_checked: `", name, "` is not floating point");
  constexpr size_t kBlock = size_t(1) << 15;  // elements: a block stays in cache between conversion and check
  const size_t n = element_count(shape), in_size = dtype_size(src_type), out_size = dtype_size(dst_type);
  const size_t blocks = (n + kBlock - 1) / kBlock;
  const auto* in = static_cast<const unsigned char*>(src);
  auto* out = static_cast<unsigned char*>(dst);
  size_t first_bad = n;
  // Blocks in parallel: a large tensor converts and checks faster than a single-threaded copy alone would.
#pragma omp parallel for schedule(static) reduction(min : first_bad) if (blocks > 1)
  for (size_t b = 0; b < blocks; ++b) {
    const size_t begin = b * kBlock, m = std::min(kBlock, n - begin);
    convert_values(in + begin * in_size, src_type, out + begin * out_size, dst_type, m);
    const size_t bad = find_nonfinite(out + begin * out_size, dst_type, m);
    if (bad != m) first_bad = std::min(first_bad, begin + bad);
  }
  if (first_bad == n) return;
  // Conversions keep NaN and ±inf: the value was non-finite already, or it overflowed the narrower dtype.
  if (find_nonfinite(in + first_bad * in_size, src_type, 1) == 0)
    fail_nonfinite(in, src_type, first_bad, shape, context, name, advice);
  fail_nonfinite(out, dst_type, first_bad, shape, context, name + "` converted to `" + dtype_name(dst_type),
                 str_cat("the value is finite in ", dtype_name(src_type), " but beyond the range of ",
                         dtype_name(dst_type)));
}

void load_entry(Backend& backend, Param& p, const SafetensorsEntry& e, const std::string& file,
                const std::string& hint) {
  if (e.shape != p.shape)
    fail(file, ": tensor `", e.name, "` has shape ", shape_text(e.shape), " but the model's `", p.name, "` is ",
         shape_text(p.shape), hint);
  LL_CHECK(is_dense_float(e.dtype), file, ": tensor `", e.name, "` is ", safetensors_dtype_name(e.dtype),
           "; weights must be BF16, F16, F32 or F64");
  if (is_quantized(p.value.dtype)) {  // quantize on load (a 4-bit base): checked as f32, then bitsandbytes' rule
    std::vector<float> values(static_cast<size_t>(p.numel()));
    convert_checked(e.data, e.dtype, values.data(), DType::F32, e.shape, file, e.name, kNonFiniteInFile);
    std::vector<unsigned char> packed(p.value.nbytes());
    quantize_4bit(p.value.dtype, values.data(), p.numel(), packed.data());
    backend.copy_from_host(p.value, packed.data());
    return;
  }
  std::vector<unsigned char> staging(p.value.nbytes());
  convert_checked(e.data, e.dtype, staging.data(), p.value.dtype, e.shape, file, e.name, kNonFiniteInFile);
  backend.copy_from_host(p.value, staging.data());
}

HostTensors host_copies(const std::vector<Param*>& params, Backend& backend, DType dtype, const std::string& destination,
                        const std::string& prefix) {
  std::vector<Param*> sorted = params;
  std::sort(sorted.begin(), sorted.end(), [](const Param* a, const Param* b) { return a->name < b->name; });
  HostTensors out;
  out.buffers.reserve(sorted.size());
  for (Param* p : sorted) {
    std::vector<unsigned char> raw(p->value.nbytes());
    backend.copy_to_host(raw.data(), p->value);
    DType raw_type = p->value.dtype;
    if (is_quantized(raw_type)) {  // a 4-bit base weight is written dense: its dequantized values
      std::vector<unsigned char> dense(size_t(p->numel()) * sizeof(float));
      dequantize_4bit(raw_type, raw.data(), p->numel(), 0, p->numel(), reinterpret_cast<float*>(dense.data()));
      raw.swap(dense);
      raw_type = DType::F32;
    }
    out.buffers.emplace_back(size_t(p->numel()) * dtype_size(dtype));
    convert_checked(raw.data(), raw_type, out.buffers.back().data(), dtype, p->shape, destination, p->name,
                    "refusing to write non-finite weights (the training run diverged: lower --learning_rate)");
    out.items.push_back({prefix + p->name, dtype, p->shape, out.buffers.back().data()});
  }
  return out;
}

void write_params(const std::string& path, const std::vector<Param*>& params, Backend& backend, DType dtype,
                  const std::string& prefix) {
  write_safetensors(path, host_copies(params, backend, dtype, path, prefix).items);
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
