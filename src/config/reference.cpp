// The configuration reference: config_keys() (keys, types, defaults) described by config.h's doc
// comments, as one Markdown page.
#include "lathe/config/reference.h"

#include <map>
#include <regex>
#include <sstream>
#include <vector>

#include <fmt/format.h>

#include "lathe/config/config.h"
#include "lathe/core/error.h"

namespace lathe::config {
namespace {

/// A field of a struct in the header: its C++ type and its doc comment.
struct FieldDoc {
  std::string type;
  std::string doc;
};

/// A struct of the header: its doc comment and its fields by name.
struct StructDoc {
  std::string doc;
  std::map<std::string, FieldDoc> fields;
};

void append(std::string& to, const std::string& text) {
  if (text.empty()) return;
  to += (to.empty() ? "" : " ") + text;
}

/// `line` without its string literals' contents and without its comment.
std::string code_of(const std::string& line) {
  std::string code;
  bool in_string = false;
  for (size_t i = 0; i < line.size(); ++i) {
    const char c = line[i];
    if (in_string) {
      if (c == '\\') ++i;
      else if (c == '"') in_string = false, code += c;
      continue;
    }
    if (c == '"') in_string = true;
    if (c == '/' && i + 1 < line.size() && line[i + 1] == '/') break;
    code += c;
  }
  return code;
}

/// The text of the `///` or `///<` comment on `line` (empty when it has none).
std::string doc_of(const std::string& line, bool beside) {
  const std::string mark = beside ? "///<" : "///";
  const auto at = line.find(mark);
  if (at == std::string::npos || (!beside && line.compare(at, 4, "///<") == 0)) return "";
  std::string text = line.substr(at + mark.size());
  const auto first = text.find_first_not_of(' ');
  return first == std::string::npos ? "" : text.substr(first);
}

/// The structs of config.h with the doc comments of each struct and field. Fields are the
/// declarations directly inside a struct's braces; member functions and their bodies are skipped.
std::map<std::string, StructDoc> parse_header(std::string_view header) {
  static const std::regex struct_re(R"(^\s*struct\s+(\w+)\s*\{\s*$)");
  static const std::regex field_re(R"(^\s*([\w:<>, ]+?)\s+(\w+)\s*(=[^;]*|\{[^;]*\})?;\s*$)");
  std::map<std::string, StructDoc> out;
  std::istringstream in{std::string(header)};
  std::string line, pending, current, last_field;
  int depth = 0, struct_depth = 0;  // brace depth now, and outside the current struct
  while (std::getline(in, line)) {
    const std::string code = code_of(line);
    const bool blank_code = code.find_first_not_of(" \t") == std::string::npos;
    std::smatch m;
    if (current.empty() && std::regex_match(code, m, struct_re)) {
      current = m[1];
      struct_depth = depth;
      out[current].doc = pending;
      pending.clear();
      last_field.clear();
    } else if (!current.empty() && depth == struct_depth + 1) {
      if (blank_code && !doc_of(line, true).empty() && !last_field.empty()) {
        append(out[current].fields[last_field].doc, doc_of(line, true));  // a continued ///<
      } else if (blank_code && line.find("///") != std::string::npos) {
        append(pending, doc_of(line, false));
        last_field.clear();
      } else if (std::regex_match(code, m, field_re)) {
        FieldDoc field{m[1], pending};
        append(field.doc, doc_of(line, true));
        last_field = m[2];
        out[current].fields[last_field] = field;
        pending.clear();
      } else {
        pending.clear();
        last_field.clear();
      }
    } else if (blank_code && line.find("///") != std::string::npos) {
      append(pending, doc_of(line, false));
    } else {
      pending.clear();
    }
    for (const char c : code) depth += c == '{' ? 1 : c == '}' ? -1 : 0;
    if (!current.empty() && depth <= struct_depth) current.clear();
  }
  return out;
}

/// Text for a Markdown table cell: pipes escaped, angle brackets as entities.
std::string cell(const std::string& text) {
  std::string out;
  for (const char c : text) {
    if (c == '|') out += "\\|";
    else if (c == '<') out += "&lt;";
    else if (c == '>') out += "&gt;";
    else out += c;
  }
  return out;
}

}  // namespace

std::string reference_markdown(std::string_view config_header) {
  const std::map<std::string, StructDoc> structs = parse_header(config_header);
  const auto struct_named = [&](const std::string& name, const std::string& key) -> const StructDoc& {
    const auto it = structs.find(name);
    LATHE_CHECK(it != structs.end(), ConfigError,
                "configuration reference: config.h declares no struct {} (for key '{}')", name, key);
    return it->second;
  };
  // The field behind each part of a dotted key, from RunConfig down.
  const auto field_of = [&](const std::string& key) {
    std::vector<const FieldDoc*> path;
    std::string type = "RunConfig";
    std::istringstream parts(key);
    for (std::string part; std::getline(parts, part, '.');) {
      const StructDoc& s = struct_named(type, key);
      const auto it = s.fields.find(part);
      LATHE_CHECK(it != s.fields.end(), ConfigError,
                  "configuration reference: key '{}': struct {} in config.h has no field '{}' "
                  "(a key must be named as its field)",
                  key, type, part);
      path.push_back(&it->second);
      type = it->second.type;
    }
    return path;
  };

  std::string out = fmt::format(
      "# Configuration reference\n\n"
      "<!-- Generated from the config schema: the keys, types and defaults from the one list of\n"
      "fields per section that reading and writing configs use (src/config/config.cpp), the\n"
      "descriptions from the doc comments of include/lathe/config/config.h. Edit those, then run\n"
      "`cmake --build build/ci --target config-reference` (any build folder with tests on). -->\n\n"
      "Every key a run config takes, with its type, its default and what it does. A key left out\n"
      "takes its default; `auto` means the value comes from the data or the device, and the run's\n"
      "resolved `config.yaml` holds what was chosen. Besides these keys, `model:` takes the chosen\n"
      "model's own options ([models/README.md](../models/README.md), `lathe info --model NAME`) and\n"
      "`data.columns` maps a CSV column's name to its own settings ([data.md](data.md)). How\n"
      "configs, overrides and errors work: [configuration.md](configuration.md).\n");
  std::string section;
  for (const ConfigKey& k : config_keys()) {
    const auto path = field_of(k.key);
    const std::string name = k.key.substr(k.key.rfind('.') + 1);
    const std::string parent = k.key.substr(0, k.key.rfind('.'));
    if (parent != section) {
      section = parent;
      const bool top = parent.find('.') == std::string::npos;
      std::string about = path[path.size() - 2]->doc;
      const std::string& struct_doc = struct_named(path[path.size() - 2]->type, k.key).doc;
      if (!top || about.empty()) append(about, struct_doc);
      out += fmt::format("\n{} `{}`\n\n", top ? "##" : "###", parent);
      if (!about.empty()) out += fmt::format("{}\n\n", cell(about));
      out += "| key | type | default | description |\n| --- | --- | --- | --- |\n";
    }
    const std::string& doc = path.back()->doc;
    LATHE_CHECK(!doc.empty(), ConfigError,
                "configuration reference: key '{}' has no doc comment on its field '{}' in "
                "include/lathe/config/config.h; document it there (///< beside the field)",
                k.key, name);
    out += fmt::format("| `{}` | {} | {} | {} |\n", name, k.type,
                       k.required ? "required" : fmt::format("`{}`", k.default_yaml), cell(doc));
  }
  return out;
}

}  // namespace lathe::config
