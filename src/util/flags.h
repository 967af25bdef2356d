// Command-line flags for the thin binaries: `--name value` or `--name=value`, typed, with defaults,
// `--help` listing every flag, `--config FILE.json` supplying any flag (the command line wins), and
// errors that name the flag and suggest the nearest valid one.
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

  // Registers a flag bound to `target`; the value already in *target is the default.
  void add(const std::string& name, std::string* target, const std::string& help);
  void add(const std::string& name, int64_t* target, const std::string& help);
  void add(const std::string& name, double* target, const std::string& help);
  // Booleans accept true/false/1/0/yes/no; a bare `--name` (no value) means true.
  void add(const std::string& name, bool* target, const std::string& help);

  // Parses argv[first..argc). Returns false when --help was requested (the help text is printed to stdout).
  // Throws ll::Error for an unknown flag (with a suggestion), a missing or malformed value, or a bad config file.
  bool parse(int argc, char** argv, int first = 1);

  bool was_set(const std::string& name) const;  // given on the command line or in --config
  std::string help() const;
  nlohmann::json values() const;  // every flag's resolved value, for output_dir/training_args.json

  // The registered name nearest to `name` by edit distance, or "" when nothing is close.
  std::string suggest(const std::string& name) const;

 private:
  enum class Kind { String, Int, Double, Bool };
  struct Flag {
    std::string name, help, default_text;
    Kind kind;
    void* target;
    bool set = false;
  };
  Flag* find(const std::string& name);
  const Flag* find(const std::string& name) const;
  void assign(Flag& f, const std::string& value, const std::string& where);
  void load_config(const std::string& path);
  void add_flag(const std::string& name, Kind kind, void* target, const std::string& help, std::string default_text);

  std::string program_, summary_;
  std::vector<Flag> flags_;
};

}  // namespace ll
