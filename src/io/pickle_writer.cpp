#include "io/pickle_writer.h"

#include "util/error.h"

namespace ll {
namespace {

// Opcode bytes (Python's Lib/pickletools.py documents each).
constexpr char kProto = '\x80', kStop = '.', kMark = '(', kTuple = 't', kEmptyTuple = ')', kEmptyDict = '}',
               kSetItems = 'u', kReduce = 'R', kBinPersId = 'Q', kGlobal = 'c', kBinInt = 'J', kBinInt1 = 'K',
               kBinInt2 = 'M', kLong1 = '\x8a', kNewTrue = '\x88', kNewFalse = '\x89', kBinUnicode = 'X';

}  // namespace

PickleWriter::PickleWriter() {
  op(kProto);
  out_.push_back('\x02');
}

void PickleWriter::le(uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out_.push_back(char((v >> (8 * i)) & 0xFF));
}

void PickleWriter::global(const std::string& module, const std::string& name) {
  LL_ASSERT(module.find('\n') == std::string::npos && name.find('\n') == std::string::npos,
           "pickle: a global's module and name cannot contain a newline");
  op(kGlobal);
  out_ += module + "\n" + name + "\n";
}

void PickleWriter::mark() { op(kMark); }
void PickleWriter::tuple() { op(kTuple); }
void PickleWriter::empty_tuple() { op(kEmptyTuple); }
void PickleWriter::empty_dict() { op(kEmptyDict); }
void PickleWriter::set_items() { op(kSetItems); }
void PickleWriter::reduce() { op(kReduce); }
void PickleWriter::persistent_id() { op(kBinPersId); }
void PickleWriter::boolean(bool v) { op(v ? kNewTrue : kNewFalse); }

void PickleWriter::integer(int64_t v) {
  if (v >= 0 && v < 0x100) {
    op(kBinInt1);
    le(uint64_t(v), 1);
  } else if (v >= 0 && v < 0x10000) {
    op(kBinInt2);
    le(uint64_t(v), 2);
  } else if (v >= INT32_MIN && v <= INT32_MAX) {
    op(kBinInt);
    le(uint64_t(uint32_t(int32_t(v))), 4);
  } else {  // two's complement, little-endian, in as few bytes as keep the sign (here 5 to 8)
    int bytes = 8;
    while (bytes > 1) {
      const int64_t shift = 8 * (bytes - 1) - 1;  // the top kept byte's sign bit
      if ((v >> shift) != 0 && (v >> shift) != -1) break;
      --bytes;
    }
    op(kLong1);
    out_.push_back(char(bytes));
    le(uint64_t(v), bytes);
  }
}

void PickleWriter::string(const std::string& s) {
  LL_CHECK(s.size() <= UINT32_MAX, "pickle: a string of ", s.size(), " bytes does not fit BINUNICODE");
  op(kBinUnicode);
  le(s.size(), 4);
  out_ += s;
}

const std::string& PickleWriter::finish() {
  if (!finished_) op(kStop);
  finished_ = true;
  return out_;
}

}  // namespace ll
