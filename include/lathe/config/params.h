// Params: a model's free-form options from the config, read with types and checked for unknown keys.
#pragma once

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

namespace lathe::config {

/// One option as written in the config: a scalar or a list of scalars, and where it came from
/// ("configs/run.yaml:12" or "override 'model.hidden=64'").
struct ParamValue {
  std::vector<std::string> items;  ///< one item for a scalar
  bool is_list = false;
  std::string where;
};

/// The options of a section whose keys depend on a choice made elsewhere (a model's options
/// depend on model.name). The component that owns them reads each with a type; `check_all_used`
/// then rejects every key nobody read, naming the file and line.
///
///   int64_t hidden = params.get_int("hidden", 128);
///   params.check_all_used();   // ConfigError: run.yaml:9: unknown key 'model.hiden' ...
class Params {
 public:
  Params() = default;
  explicit Params(std::string section) : section_(std::move(section)) {}

  void set(const std::string& key, ParamValue value) { values_[key] = std::move(value); }
  bool has(const std::string& key) const { return values_.count(key) != 0; }
  /// Removes `key` (an `auto` size the data did not fill: the component's default applies).
  void erase(const std::string& key) { values_.erase(key); }
  const std::map<std::string, ParamValue>& values() const { return values_; }
  const std::string& section() const { return section_; }

  int64_t get_int(const std::string& key, int64_t fallback) const;
  double get_double(const std::string& key, double fallback) const;
  bool get_bool(const std::string& key, bool fallback) const;
  std::string get_string(const std::string& key, const std::string& fallback) const;
  std::vector<int64_t> get_int_list(const std::string& key, std::vector<int64_t> fallback) const;

  /// Throws ConfigError for the first key that no get_* asked for, with a "did you mean" hint
  /// among the keys that were asked for.
  void check_all_used() const;

 private:
  const ParamValue* find(const std::string& key) const;
  std::string section_;
  std::map<std::string, ParamValue> values_;
  mutable std::set<std::string> asked_;
};

/// Parsing of one scalar as written in YAML, with the error naming `where` and `key`.
int64_t parse_int(const std::string& text, const std::string& where, const std::string& key);
double parse_double(const std::string& text, const std::string& where, const std::string& key);
bool parse_bool(const std::string& text, const std::string& where, const std::string& key);

/// True when `name` matches `pattern` with * (any run of characters) and ? (one character), as
/// parameter-name patterns in configs use them ("features.*", "layer?.0.*").
bool matches_pattern(const std::string& name, const std::string& pattern);

/// The known key closest to `key` within edit distance 2, or "" (for "did you mean" hints).
std::string closest_key(const std::string& key, const std::vector<std::string>& known);

}  // namespace lathe::config
