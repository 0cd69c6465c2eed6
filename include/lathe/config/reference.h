// The configuration reference page (docs/configuration-reference.md), generated from the schema.
#pragma once

#include <string>
#include <string_view>

namespace lathe::config {

/// The configuration reference as Markdown: every key of config_keys() — the one list of fields
/// that reading and writing configs go through — with its type and default, described by the
/// doc comments (`///` above, `///<` beside) of its field in `config_header`, the text of
/// include/lathe/config/config.h. A key whose field has no doc comment, or that the header does
/// not declare, is a ConfigError naming it: the page documents every key or is not written.
///
///   cmake --build build/ci --target config-reference   # rewrites docs/configuration-reference.md
std::string reference_markdown(std::string_view config_header);

}  // namespace lathe::config
