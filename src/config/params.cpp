// Typed reads of free-form config options, scalar parsing and "did you mean" hints.
#include "lathe/config/params.h"

#include <algorithm>
#include <charconv>
#include <cmath>

#include "lathe/core/error.h"

namespace lathe::config {

int64_t parse_int(const std::string& text, const std::string& where, const std::string& key) {
  int64_t v = 0;
  const auto* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec == std::errc() && p == end && !text.empty()) return v;
  throw ConfigError(fmt::format("{}: key '{}' expects an integer, got '{}'", where, key, text));
}

double parse_double(const std::string& text, const std::string& where, const std::string& key) {
  // YAML spellings of infinity and NaN are not accepted: no lathe option wants them.
  double v = 0;
  const auto* end = text.data() + text.size();
  const auto [p, ec] = std::from_chars(text.data(), end, v);
  if (ec == std::errc() && p == end && !text.empty() && std::isfinite(v)) return v;
  throw ConfigError(fmt::format("{}: key '{}' expects a number, got '{}'", where, key, text));
}

bool parse_bool(const std::string& text, const std::string& where, const std::string& key) {
  std::string t = text;
  std::transform(t.begin(), t.end(), t.begin(), [](unsigned char c) { return std::tolower(c); });
  if (t == "true" || t == "yes" || t == "on") return true;
  if (t == "false" || t == "no" || t == "off") return false;
  throw ConfigError(
      fmt::format("{}: key '{}' expects true or false, got '{}'", where, key, text));
}

namespace {
size_t edit_distance(const std::string& a, const std::string& b) {
  std::vector<size_t> row(b.size() + 1);
  for (size_t j = 0; j <= b.size(); ++j) row[j] = j;
  for (size_t i = 1; i <= a.size(); ++i) {
    size_t diag = row[0];
    row[0] = i;
    for (size_t j = 1; j <= b.size(); ++j) {
      const size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] == b[j - 1] ? 0 : 1)});
      diag = up;
    }
  }
  return row[b.size()];
}
}  // namespace

bool matches_pattern(const std::string& name, const std::string& pattern) {
  // Iterative wildcard match with backtracking on the last '*'.
  size_t n = 0, p = 0, star = std::string::npos, mark = 0;
  while (n < name.size()) {
    if (p < pattern.size() && (pattern[p] == '?' || pattern[p] == name[n])) {
      ++n, ++p;
    } else if (p < pattern.size() && pattern[p] == '*') {
      star = p++, mark = n;
    } else if (star != std::string::npos) {
      p = star + 1, n = ++mark;
    } else {
      return false;
    }
  }
  while (p < pattern.size() && pattern[p] == '*') ++p;
  return p == pattern.size();
}

std::string closest_key(const std::string& key, const std::vector<std::string>& known) {
  std::string best;
  size_t best_d = 3;
  for (const auto& k : known) {
    const size_t d = edit_distance(key, k);
    if (d < best_d) best_d = d, best = k;
  }
  return best;
}

const ParamValue* Params::find(const std::string& key) const {
  asked_.insert(key);
  const auto it = values_.find(key);
  return it == values_.end() ? nullptr : &it->second;
}

namespace {
const std::string& scalar(const ParamValue& v, const std::string& full_key) {
  LATHE_CHECK(!v.is_list && v.items.size() == 1, ConfigError,
              "{}: key '{}' expects a single value, got a list", v.where, full_key);
  return v.items.front();
}
}  // namespace

int64_t Params::get_int(const std::string& key, int64_t fallback) const {
  const auto* v = find(key);
  const std::string full = section_ + "." + key;
  return v ? parse_int(scalar(*v, full), v->where, full) : fallback;
}

double Params::get_double(const std::string& key, double fallback) const {
  const auto* v = find(key);
  const std::string full = section_ + "." + key;
  return v ? parse_double(scalar(*v, full), v->where, full) : fallback;
}

bool Params::get_bool(const std::string& key, bool fallback) const {
  const auto* v = find(key);
  const std::string full = section_ + "." + key;
  return v ? parse_bool(scalar(*v, full), v->where, full) : fallback;
}

std::string Params::get_string(const std::string& key, const std::string& fallback) const {
  const auto* v = find(key);
  return v ? scalar(*v, section_ + "." + key) : fallback;
}

std::vector<int64_t> Params::get_int_list(const std::string& key,
                                          std::vector<int64_t> fallback) const {
  const auto* v = find(key);
  if (v == nullptr) return fallback;
  std::vector<int64_t> out;
  for (const auto& item : v->items) out.push_back(parse_int(item, v->where, section_ + "." + key));
  return out;
}

void Params::check_all_used() const {
  const std::vector<std::string> known(asked_.begin(), asked_.end());
  for (const auto& [key, value] : values_) {
    if (asked_.count(key)) continue;
    const std::string hint = closest_key(key, known);
    std::string allowed;
    for (const auto& k : known) allowed += (allowed.empty() ? "" : ", ") + k;
    throw ConfigError(fmt::format("{}: unknown key '{}.{}'{}; known keys here: {}", value.where,
                                  section_, key,
                                  hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", hint),
                                  allowed));
  }
}

}  // namespace lathe::config
