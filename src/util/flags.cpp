#include "util/flags.h"

#include <algorithm>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "util/error.h"
#include "util/files.h"
#include "util/strings.h"

namespace ll {

namespace {

size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> prev(b.size() + 1), cur(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) prev[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    cur[0] = i;
    for (size_t j = 1; j <= b.size(); ++j)
      cur[j] = std::min({prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] == b[j - 1] ? 0 : 1)});
    std::swap(prev, cur);
  }
  return prev[b.size()];
}

std::string format_double(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

}  // namespace

Flags::Flags(std::string program, std::string summary) : program_(std::move(program)), summary_(std::move(summary)) {}

void Flags::add_flag(const std::string& name, Kind kind, void* target, const std::string& help,
                     std::string default_text) {
  LL_CHECK(find(name) == nullptr, "flag --", name, " registered twice");
  flags_.push_back({name, help, std::move(default_text), kind, target});
}
void Flags::add(const std::string& name, std::string* target, const std::string& help) {
  add_flag(name, Kind::String, target, help, target->empty() ? "\"\"" : *target);
}
Flags::Range Flags::add(const std::string& name, int64_t* target, const std::string& help) {
  add_flag(name, Kind::Int, target, help, std::to_string(*target));
  return Range(this, flags_.size() - 1);
}
Flags::Range Flags::add(const std::string& name, double* target, const std::string& help) {
  add_flag(name, Kind::Double, target, help, format_double(*target));
  return Range(this, flags_.size() - 1);
}
void Flags::add(const std::string& name, bool* target, const std::string& help) {
  add_flag(name, Kind::Bool, target, help, *target ? "true" : "false");
}

void Flags::add_ignored(const std::string& name, const std::string& why) {
  add_flag(name, Kind::Ignored, nullptr, why, "ignored");
}

Flags::Range& Flags::Range::at_least(double lo) {
  Flag& f = flags_->flags_[index_];
  f.has_lo = true, f.lo_open = false, f.lo = lo;
  return *this;
}
Flags::Range& Flags::Range::above(double lo) {
  Flag& f = flags_->flags_[index_];
  f.has_lo = true, f.lo_open = true, f.lo = lo;
  return *this;
}
Flags::Range& Flags::Range::at_most(double hi) {
  Flag& f = flags_->flags_[index_];
  f.has_hi = true, f.hi_open = false, f.hi = hi;
  return *this;
}
Flags::Range& Flags::Range::below(double hi) {
  Flag& f = flags_->flags_[index_];
  f.has_hi = true, f.hi_open = true, f.hi = hi;
  return *this;
}

std::string Flags::requirement(const Flag& f) {
  const bool integer = f.kind == Kind::Int;
  auto bound = [&](double b) { return integer ? std::to_string(int64_t(b)) : format_double(b); };
  std::string s = integer ? "an integer" : "a finite number";
  if (f.has_lo && f.has_hi)
    s += str_cat(" in ", f.lo_open ? "(" : "[", bound(f.lo), ", ", bound(f.hi), f.hi_open ? ")" : "]");
  else if (f.has_lo)
    s += str_cat(f.lo_open ? " > " : " >= ", bound(f.lo));
  else if (f.has_hi)
    s += str_cat(f.hi_open ? " < " : " <= ", bound(f.hi));
  return s;
}

void Flags::check_value(const Flag& f, const std::string& where) const {
  double v = 0;
  std::string text;
  if (f.kind == Kind::Int) {
    const int64_t i = *static_cast<const int64_t*>(f.target);
    v = double(i), text = std::to_string(i);
  } else if (f.kind == Kind::Double) {
    v = *static_cast<const double*>(f.target), text = format_double(v);
  } else {
    return;
  }
  const bool ok = std::isfinite(v) && (!f.has_lo || (f.lo_open ? v > f.lo : v >= f.lo)) &&
                  (!f.has_hi || (f.hi_open ? v < f.hi : v <= f.hi));
  if (!ok) fail(where, "--", f.name, " must be ", requirement(f), ", got ", text);
}

void Flags::check_values() const {
  for (const Flag& f : flags_) check_value(f, program_ + ": ");
}

Flags::Flag* Flags::find(const std::string& name) {
  for (Flag& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}
const Flags::Flag* Flags::find(const std::string& name) const {
  for (const Flag& f : flags_)
    if (f.name == name) return &f;
  return nullptr;
}

std::string Flags::suggest(const std::string& name) const {
  std::string best;
  size_t best_distance = std::max<size_t>(2, name.size() / 3) + 1;
  for (const Flag& f : flags_) {
    const size_t d = edit_distance(name, f.name);
    if (d < best_distance) best_distance = d, best = f.name;
  }
  return best;
}

void Flags::assign(Flag& f, const std::string& value, const std::string& where) {
  const std::string ctx = where + "--" + f.name;
  switch (f.kind) {
    case Kind::String: *static_cast<std::string*>(f.target) = value; break;
    case Kind::Ignored:
      notes_.push_back(str_cat("--", f.name, value.empty() ? "" : " " + value, ": ignored; ", f.help));
      break;
    case Kind::Int: {
      errno = 0;
      char* end = nullptr;
      const long long v = std::strtoll(value.c_str(), &end, 10);
      LL_CHECK(!value.empty() && end && *end == '\0' && errno == 0, ctx, ": expected an integer, got `", value, "`");
      *static_cast<int64_t*>(f.target) = v;
      break;
    }
    case Kind::Double: {
      errno = 0;
      char* end = nullptr;
      const double v = std::strtod(value.c_str(), &end);
      LL_CHECK(!value.empty() && end && *end == '\0' && errno == 0, ctx, ": expected a number, got `", value, "`");
      *static_cast<double*>(f.target) = v;
      break;
    }
    case Kind::Bool: {
      const std::string v = to_lower(value);
      if (v == "true" || v == "1" || v == "yes") *static_cast<bool*>(f.target) = true;
      else if (v == "false" || v == "0" || v == "no") *static_cast<bool*>(f.target) = false;
      else fail(ctx, ": expected true or false, got `", value, "`");
      break;
    }
  }
  check_value(f, where);
  f.set = true;
}

void Flags::load_config(const std::string& path) {
  std::string text;
  try {
    text = read_text_file(path);
  } catch (const Error& e) {
    fail("--config: ", e.what());
  }
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(text);
  } catch (const nlohmann::json::exception& e) {
    fail("--config `", path, "`: invalid JSON: ", e.what());
  }
  LL_CHECK(j.is_object(), "--config `", path, "`: expected a JSON object of flag names to values");
  for (auto it = j.begin(); it != j.end(); ++it) {
    Flag* f = find(it.key());
    if (!f) {
      const std::string s = suggest(it.key());
      fail("--config `", path, "`: unknown flag `", it.key(), "`", s.empty() ? "" : "; did you mean `" + s + "`?");
    }
    if (f->set) continue;  // the command line wins (it is parsed first)
    std::string value;
    const nlohmann::json& v = it.value();
    if (v.is_string()) value = v.get<std::string>();
    else if (v.is_boolean()) value = v.get<bool>() ? "true" : "false";
    else if (v.is_number_integer()) value = std::to_string(v.get<int64_t>());
    else if (v.is_number()) value = format_double(v.get<double>());
    else if (v.is_array()) {  // lists become comma-separated strings
      for (const auto& item : v) value += (value.empty() ? "" : ",") + (item.is_string() ? item.get<std::string>() : item.dump());
    } else fail("--config `", path, "`: flag `", it.key(), "` has an unsupported value ", v.dump());
    assign(*f, value, "--config `" + path + "`: ");
  }
}

bool Flags::parse(int argc, char** argv, int first) {
  std::string config_path;
  for (int i = first; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(help().c_str(), stdout);
      return false;
    }
    LL_CHECK(arg.rfind("--", 0) == 0 && arg.size() > 2, program_, ": unexpected argument `", arg,
             "`; flags look like --name value (see --help)");
    std::string name = arg.substr(2), value;
    bool has_value = false;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      value = name.substr(eq + 1);
      name = name.substr(0, eq);
      has_value = true;
    }
    if (name == "config") {
      if (!has_value) {
        LL_CHECK(i + 1 < argc, program_, ": --config needs a file name");
        value = argv[++i];
      }
      config_path = value;
      continue;
    }
    Flag* f = find(name);
    if (!f && name.rfind("-", 0) == 0) {
      // LongLoRA's README writes `----enable_streaming`: extra leading dashes name the same flag, said once.
      const size_t first_letter = name.find_first_not_of('-');
      if (first_letter != std::string::npos && (f = find(name.substr(first_letter))) != nullptr) {
        notes_.push_back(str_cat(arg.substr(0, arg.find('=')), ": read as --", f->name, " (extra leading dashes)"));
        name = f->name;
      }
    }
    if (!f) {
      const std::string s = suggest(name);
      fail(program_, ": unknown flag `--", name, "`", s.empty() ? "" : "; did you mean `--" + s + "`?",
           " (see --help)");
    }
    if (!has_value) {
      const bool next_is_value = i + 1 < argc && std::string(argv[i + 1]).rfind("--", 0) != 0;
      if ((f->kind == Kind::Bool || f->kind == Kind::Ignored) && !next_is_value) {
        value = f->kind == Kind::Bool ? "true" : "";
      } else {
        LL_CHECK(next_is_value, program_, ": flag --", name, " needs a value");
        value = argv[++i];
      }
    }
    assign(*f, value, program_ + ": ");
  }
  if (!config_path.empty()) load_config(config_path);
  return true;
}

bool Flags::was_set(const std::string& name) const {
  const Flag* f = find(name);
  LL_CHECK(f != nullptr, "was_set: no flag --", name);
  return f->set;
}

std::string Flags::help() const {
  std::ostringstream os;
  os << "usage: " << program_ << " [--flag value ...]\n" << summary_ << "\n\nflags (default in brackets):\n";
  for (const Flag& f : flags_) {
    if (f.kind == Kind::Ignored) {
      os << "  --" << f.name << " (accepted for LongLoRA command lines, ignored: " << f.help << ")\n";
      continue;
    }
    os << "  --" << f.name << " [" << f.default_text << "]\n      " << f.help;
    if (f.has_lo || f.has_hi) os << " (" << requirement(f) << ")";
    os << "\n";
  }
  os << "  --config FILE.json\n      read any of the flags above from a JSON object; the command line wins\n";
  return os.str();
}

nlohmann::json Flags::values() const {
  nlohmann::json j = nlohmann::json::object();
  for (const Flag& f : flags_) {
    switch (f.kind) {
      case Kind::String: j[f.name] = *static_cast<const std::string*>(f.target); break;
      case Kind::Int: j[f.name] = *static_cast<const int64_t*>(f.target); break;
      case Kind::Double: j[f.name] = *static_cast<const double*>(f.target); break;
      case Kind::Bool: j[f.name] = *static_cast<const bool*>(f.target); break;
      case Kind::Ignored: break;
    }
  }
  return j;
}

}  // namespace ll
