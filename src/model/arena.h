// Memory is planned, not discovered: an arena is one backend allocation carved into tensors.
// Usage: reserve every tensor (offsets computed, nothing allocated), then commit() once, then
// tensor(handle) returns views. Nothing is allocated after commit().
#pragma once
#include <algorithm>
#include <string>
#include <vector>

#include "core/backend.h"

namespace ll {

class Arena {
 public:
  Arena(Backend& backend, std::string name) : backend_(&backend), name_(std::move(name)) {}
  ~Arena() {
    if (base_) backend_->release(base_);
  }
  Arena(const Arena&) = delete;
  Arena& operator=(const Arena&) = delete;

  struct Handle {
    size_t index = size_t(-1);
    bool valid() const { return index != size_t(-1); }
  };

  Handle reserve(DType dtype, const std::vector<int64_t>& dims) {
    LL_ASSERT(base_ == nullptr, "arena `", name_, "`: reserve() after commit()");
    Tensor shape(nullptr, dtype, backend_->device(), dims);
    constexpr size_t kAlign = 256;
    size_ = (size_ + kAlign - 1) / kAlign * kAlign;
    entries_.push_back({shape, size_});
    size_ += shape.nbytes();
    return Handle{entries_.size() - 1};
  }

  // Buffers that are never live at the same time can share memory: what is reserved between begin_shared() and
  // end_shared() is laid out in phases, each next_phase() starting again at the offset where begin_shared() was;
  // the arena then continues after the largest phase.
  void begin_shared() {
    LL_ASSERT(!in_shared_, "arena `", name_, "`: begin_shared() twice");
    size_ = (size_ + 255) / 256 * 256;
    in_shared_ = true;
    shared_start_ = shared_end_ = size_;
  }
  void next_phase() {
    LL_ASSERT(in_shared_, "arena `", name_, "`: next_phase() outside begin_shared()/end_shared()");
    shared_end_ = std::max(shared_end_, size_);
    size_ = shared_start_;
  }
  void end_shared() {
    LL_ASSERT(in_shared_, "arena `", name_, "`: end_shared() without begin_shared()");
    size_ = std::max(shared_end_, size_);
    in_shared_ = false;
  }

  // Allocates the whole arena and zero-fills it.
  void commit() {
    LL_ASSERT(base_ == nullptr, "arena `", name_, "`: committed twice");
    LL_ASSERT(!in_shared_, "arena `", name_, "`: commit() inside begin_shared()/end_shared()");
    if (size_ == 0) return;
    size_ = (size_ + 255) / 256 * 256;
    base_ = backend_->allocate(size_);
    backend_->zero(Tensor(base_, DType::F32, backend_->device(), {int64_t(size_ / 4)}));
  }

  Tensor tensor(Handle h) const {
    LL_ASSERT(h.valid() && h.index < entries_.size(), "arena `", name_, "`: invalid handle");
    LL_ASSERT(base_ != nullptr || size_ == 0, "arena `", name_, "`: tensor() before commit()");
    Tensor t = entries_[h.index].shape;
    t.data = static_cast<char*>(base_) + entries_[h.index].offset;
    return t;
  }

  size_t bytes() const { return (size_ + 255) / 256 * 256; }  // what commit() allocates (or allocated)
  // The whole committed arena as one 1-D tensor of `dtype` (padding between tensors included, zero-filled):
  // what collectives and sharding operate on.
  Tensor flat(DType dtype) const {
    LL_ASSERT(size_ % dtype_size(dtype) == 0, "arena `", name_, "`: ", size_, " bytes are not a whole number of ",
             dtype_name(dtype));
    return Tensor(base_, dtype, backend_->device(), {int64_t(size_ / dtype_size(dtype))});
  }
  // Element offset of a tensor of this arena within flat(its dtype).
  int64_t offset_of(const Tensor& t) const {
    return int64_t((static_cast<const char*>(t.data) - static_cast<const char*>(base_)) / dtype_size(t.dtype));
  }
  const std::string& name() const { return name_; }

 private:
  struct Entry {
    Tensor shape;
    size_t offset;
  };
  Backend* backend_;
  std::string name_;
  std::vector<Entry> entries_;
  size_t size_ = 0;
  void* base_ = nullptr;
  bool in_shared_ = false;
  size_t shared_start_ = 0, shared_end_ = 0;
};

}  // namespace ll
