// Command-line flags for the thin binaries: `--name value` or `--name=value`, typed, with defaults,
// `--help` listing every flag, `--config FILE.json` supplying any flag (the command line wins), and
// errors that name the flag and suggest the nearest valid one. A numeric flag declares the values it accepts
// where it is registered (`flags.add(...).at_least(0).below(1)`); every number flag also refuses NaN and ±inf.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace ll {

class Flags {
 public:
  Flags(std::string program, std::string summary);

  // What a numeric add() returns: the range of values the flag accepts, e.g.
  //   flags.add("adam_beta1", &o.adam_beta1, "AdamW beta1").at_least(0).below(1);
  // A value outside it (given on the command line or in --config, or found by check_values()) is an error naming
  // the flag, the value and the range. Bounds of integer flags are compared as doubles (keep them small).
  class Range {
   public:
    Range& at_least(double lo);  // value >= lo
    Range& above(double lo);     // value > lo
    Range& at_most(double hi);   // value <= hi
    Range& below(double hi);     // value < hi

   private:
    friend class Flags;
    Range(Flags* flags, size_t index) : flags_(flags), index_(index) {}
    Flags* flags_;
    size_t index_;
  };

  // Registers a flag bound to `target`; the value already in *target is the default.
  void add(const std::string& name, std::string* target, const std::string& help);
  Range add(const std::string& name, int64_t* target, const std::string& help);
  // Number flags refuse NaN and ±inf whatever their range.
  Range add(const std::string& name, double* target, const std::string& help);
  // Booleans accept true/false/1/0/yes/no (any case: Python's True/False); a bare `--name` (no value, argparse's
  // store_true) means true.
  void add(const std::string& name, bool* target, const std::string& help);
  // A flag of another program's vocabulary (LongLoRA's scripts, Hugging Face's TrainingArguments) that this binary
  // accepts and ignores: given with a value or bare, it adds the line "--name value: ignored; <why>" to notes().
  // Each binary keeps these in one table, beside the flags it maps.
  void add_ignored(const std::string& name, const std::string& why);
  // One line per ignored flag given (command line, then --config), for the binary to print once (rank 0).
  const std::vector<std::string>& notes() const { return notes_; }

  // Parses argv[first..argc). Returns false when --help was requested (the help text is printed to stdout).
  // Throws ll::Error for an unknown flag (with a suggestion), a missing or malformed value, or a bad config file.
  bool parse(int argc, char** argv, int first = 1);

  // Checks the current value of every numeric flag (set or default) against its range; throws like parse().
  // Library entry points validate an options struct filled without a command line by registering its flags on a
  // scratch Flags and calling this, so the ranges are declared once, at the flags.
  void check_values() const;

  bool was_set(const std::string& name) const;  // given on the command line or in --config
  std::string help() const;
  nlohmann::json values() const;  // every flag's resolved value, for output_dir/training_args.json

  // The registered name nearest to `name` by edit distance, or "" when nothing is close.
  std::string suggest(const std::string& name) const;

 private:
  enum class Kind { String, Int, Double, Bool, Ignored };
  struct Flag {
    std::string name, help, default_text;
    Kind kind;
    void* target;
    bool set = false;
    bool has_lo = false, lo_open = false, has_hi = false, hi_open = false;  // the accepted range
    double lo = 0, hi = 0;
  };
  static std::string requirement(const Flag& f);  // "an integer >= 1", "a finite number in [0, 1)", …
  void check_value(const Flag& f, const std::string& where) const;
  Flag* find(const std::string& name);
  const Flag* find(const std::string& name) const;
  void assign(Flag& f, const std::string& value, const std::string& where);
  void load_config(const std::string& path);
  void add_flag(const std::string& name, Kind kind, void* target, const std::string& help, std::string default_text);

  std::string program_, summary_;
  std::vector<Flag> flags_;
  std::vector<std::string> notes_;
};

}  // namespace ll
