// Tensor: a non-owning view (pointer, dtype, shape, device) over contiguous row-major memory.
// Memory is owned by arenas (see model/arena.h); a Tensor never frees anything.
#pragma once
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <string>
#include <vector>

#include "core/dtype.h"
#include "util/error.h"

namespace ll {

enum class Device : uint8_t { CPU, CUDA };

inline const char* device_name(Device d) { return d == Device::CPU ? "cpu" : "cuda"; }

// "[32,8]": a shape in messages.
inline std::string shape_text(const std::vector<int64_t>& shape) {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? "," : "") + std::to_string(shape[i]);
  return s + "]";
}

template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<double>() { return DType::F64; }
template <> constexpr DType dtype_of<int32_t>() { return DType::I32; }

struct Tensor {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  DType dtype = DType::F32;
  Device device = Device::CPU;
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};

  Tensor() = default;
  Tensor(void* data_, DType dtype_, Device device_, std::initializer_list<int64_t> dims)
      : data(data_), dtype(dtype_), device(device_) {
    set_shape(dims.begin(), dims.size());
  }
  Tensor(void* data_, DType dtype_, Device device_, const std::vector<int64_t>& dims)
      : data(data_), dtype(dtype_), device(device_) {
    set_shape(dims.data(), dims.size());
  }

  bool empty() const { return data == nullptr; }
  int64_t dim(int i) const { return shape[i < 0 ? ndim + i : i]; }
  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return ndim == 0 ? 0 : n;
  }
  // Bytes of storage: numel × element size, or a block-quantized format's layout (core/dtype.h).
  size_t nbytes() const { return storage_bytes(dtype, numel()); }
  // Rows = product of all dimensions but the last; cols = the last dimension.
  int64_t cols() const { return ndim == 0 ? 0 : shape[ndim - 1]; }
  int64_t rows() const { return cols() == 0 ? 0 : numel() / cols(); }

  template <typename T> T* ptr() const {
    LL_ASSERT(dtype == dtype_of<T>(), "Tensor: expected dtype ", dtype_name(dtype_of<T>()), ", have ", dtype_name(dtype));
    return static_cast<T*>(data);
  }

  // Same memory, new shape (element count must match).
  Tensor view(std::initializer_list<int64_t> dims) const {
    Tensor t(data, dtype, device, dims);
    LL_ASSERT(t.numel() == numel(), "Tensor::view: ", shape_str(), " cannot be viewed as ", t.shape_str());
    return t;
  }
  // Elements [offset, offset+count) of the tensor's memory, as a 1-D tensor (flat arenas, shards, splits).
  Tensor elements(int64_t offset, int64_t count) const {
    LL_ASSERT(offset >= 0 && count >= 0 && offset + count <= numel(), "Tensor::elements: [", offset, ",",
             offset + count, ") outside ", numel(), " elements");
    return Tensor(static_cast<char*>(data) + static_cast<size_t>(offset) * dtype_size(dtype), dtype, device, {count});
  }
  // Rows [start, start+count) of the tensor seen as a (rows × cols) matrix.
  Tensor slice_rows(int64_t start, int64_t count) const {
    LL_ASSERT(start >= 0 && count >= 0 && start + count <= rows(), "Tensor::slice_rows: [", start, ",", start + count,
             ") outside ", rows(), " rows");
    return Tensor(static_cast<char*>(data) + static_cast<size_t>(start * cols()) * dtype_size(dtype), dtype, device,
                  {count, cols()});
  }

  std::vector<int64_t> dims() const { return std::vector<int64_t>(shape, shape + ndim); }

  std::string shape_str() const { return shape_text(dims()); }

 private:
  void set_shape(const int64_t* dims, size_t n) {
    LL_ASSERT(n >= 1 && n <= size_t(kMaxDims), "Tensor: rank must be 1..4, got ", n);
    for (size_t i = 0; i < n; ++i) {
      LL_ASSERT(dims[i] >= 0, "Tensor: negative dimension ", dims[i]);
      shape[ndim++] = dims[i];
    }
  }
};

}  // namespace ll
