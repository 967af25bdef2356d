// A minimal emitter of Python pickle opcodes (protocol 2): exactly the ones a PyTorch state dict needs, all of which
// torch.load(..., weights_only=True) accepts. No memo (BINPUT/BINGET): every object is written out in full, which
// that unpickler reads the same way. See io/torch_file.cpp for the objects built with it.
#pragma once
#include <cstdint>
#include <string>

namespace ll {

class PickleWriter {
 public:
  PickleWriter();  // PROTO 2

  void global(const std::string& module, const std::string& name);  // GLOBAL: pushes module.name
  void mark();                                                       // MARK
  void tuple();                                                      // TUPLE: the items since the last mark
  void empty_tuple();                                                // EMPTY_TUPLE
  void empty_dict();                                                 // EMPTY_DICT
  void set_items();        // SETITEMS: key/value pairs since the last mark into the dict below the mark
  void reduce();           // REDUCE: callable(*args), both on the stack
  void persistent_id();    // BINPERSID: the object on the stack is a persistent id for the loader to resolve
  void integer(int64_t v);             // BININT1 / BININT2 / BININT / LONG1 by size
  void boolean(bool v);                // NEWTRUE / NEWFALSE
  void string(const std::string& s);   // BINUNICODE (UTF-8)
  const std::string& finish();         // STOP; returns the pickle

 private:
  void op(char code) { out_.push_back(code); }
  void le(uint64_t v, int bytes);
  std::string out_;
  bool finished_ = false;
};

}  // namespace ll
