#include "io/torch_file.h"

#include <algorithm>
#include <cctype>
#include <set>

#include "io/pickle_writer.h"
#include "io/zip_writer.h"
#include "util/error.h"
#include "util/files.h"

namespace ll {
namespace {

// The legacy storage class torch's pickles name for each dtype (torch.storage's _dtype_to_storage_type_map).
const char* storage_class(DType t) {
  switch (t) {
    case DType::F32: return "FloatStorage";
    case DType::F64: return "DoubleStorage";
    case DType::BF16: return "BFloat16Storage";
    case DType::F16: return "HalfStorage";
    case DType::I32: return "IntStorage";
    case DType::U8: return "ByteStorage";
    default: break;
  }
  return "?";
}

// torch.save names the zip's folder after the file: "trainable_params.bin" → "trainable_params/". Any folder name
// loads; an unusual one falls back to torch's default for unnamed streams.
std::string archive_folder(const std::string& path) {
  std::string stem = path.substr(path.rfind('/') + 1);
  stem = stem.substr(0, stem.rfind('.'));
  for (char c : stem)
    if (!(std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '-')) return "archive";
  return stem.empty() ? "archive" : stem;
}

// A tensor's size or stride tuple.
void int_tuple(PickleWriter& p, const std::vector<int64_t>& values) {
  p.mark();
  for (int64_t v : values) p.integer(v);
  p.tuple();
}

// Row-major strides as torch computes them for a contiguous tensor: stride[i] = stride[i+1] · max(size[i+1], 1).
std::vector<int64_t> contiguous_strides(const std::vector<int64_t>& shape) {
  std::vector<int64_t> stride(shape.size(), 1);
  for (size_t i = shape.size(); i-- > 1;) stride[i - 1] = stride[i] * std::max<int64_t>(shape[i], 1);
  return stride;
}

// data.pkl: {name: _rebuild_tensor_v2(persistent storage, 0, size, stride, False, OrderedDict())}.
std::string state_dict_pickle(const std::vector<SafetensorsWriteItem>& items, const std::vector<uint64_t>& numels) {
  PickleWriter p;
  p.empty_dict();
  if (!items.empty()) {
    p.mark();
    for (size_t i = 0; i < items.size(); ++i) {
      const SafetensorsWriteItem& it = items[i];
      p.string(it.name);
      p.global("torch._utils", "_rebuild_tensor_v2");
      p.mark();
      p.mark();  // the persistent id: ('storage', torch.<T>Storage, key, location, numel)
      p.string("storage");
      p.global("torch", storage_class(it.dtype));
      p.string(std::to_string(i));
      p.string("cpu");
      p.integer(int64_t(numels[i]));
      p.tuple();
      p.persistent_id();
      p.integer(0);  // storage offset
      int_tuple(p, it.shape);
      int_tuple(p, contiguous_strides(it.shape));
      p.boolean(false);  // requires_grad
      p.global("collections", "OrderedDict");  // backward hooks: an empty OrderedDict
      p.empty_tuple();
      p.reduce();
      p.tuple();
      p.reduce();
    }
    p.set_items();
  }
  return p.finish();
}

}  // namespace

void write_torch_state_dict(const std::string& path, const std::vector<SafetensorsWriteItem>& items,
                            const TorchFileOptions& options) {
  std::set<std::string> seen;
  std::vector<uint64_t> numels, sizes;
  for (const SafetensorsWriteItem& it : items) {
    LL_CHECK(!it.name.empty(), path, ": cannot write a tensor with an empty name");
    LL_CHECK(seen.insert(it.name).second, path, ": tensor `", it.name, "` is given more than once");
    uint64_t numel = 1;
    for (int64_t d : it.shape) {
      LL_CHECK(d >= 0 && (d == 0 || numel <= (uint64_t(1) << 60) / uint64_t(d)), path, ": tensor `", it.name,
               "` has an invalid shape (negative or too large dimension ", d, ")");
      numel *= uint64_t(d);
    }
    LL_CHECK(numel == 0 || it.data != nullptr, path, ": tensor `", it.name, "` has ", numel, " elements but no data");
    numels.push_back(numel);
    sizes.push_back(numel * dtype_size(it.dtype));
  }
  const std::string folder = archive_folder(path) + "/";
  const std::string pickle = state_dict_pickle(items, numels);

  AtomicFileWriter out(path);
  ZipWriterOptions zo;
  zo.force_zip64 = options.force_zip64;
  ZipWriter zip(out, zo);
  zip.add(folder + "data.pkl", pickle.data(), pickle.size());
  zip.add(folder + "byteorder", "little", 6);
  for (size_t i = 0; i < items.size(); ++i) zip.add(folder + "data/" + std::to_string(i), items[i].data, sizes[i]);
  zip.add(folder + "version", "3\n", 2);
  zip.finish();
  out.commit();
}

}  // namespace ll
