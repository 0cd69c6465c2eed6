// Chat templates: the subset of Jinja Hugging Face chat templates use, rendered as transformers'
// apply_chat_template renders them (trim_blocks and lstrip_blocks on).
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <vector>

namespace lathe::data {

/// One turn of a conversation.
struct ChatMessage {
  std::string role;     ///< system | user | assistant (the template decides what it accepts)
  std::string content;
};

/// A Jinja chat template, parsed once. What it reads: text, {{ expressions }}, {% for %} (with
/// loop.index, index0, first, last, length, revindex), {% if %}/elif/else, {% set %} (names and
/// namespace attributes), {# comments #}, whitespace control (-) and transformers' trim_blocks /
/// lstrip_blocks; expressions with strings, numbers, true/false/none, lists, attribute and index
/// access, slices, + - * / // % ~, comparisons, in / not in, and / or / not, `x if c else y`,
/// tests (defined, none, string, number, mapping, iterable, true, false), the filters trim,
/// length, upper, lower, first, last, string, tojson, join, the functions raise_exception,
/// namespace and range, and the string and dict methods strip, lstrip, rstrip, startswith,
/// endswith, split, upper, lower, items, get. A syntax error is a DataError naming `origin` and
/// the line; raise_exception(msg) is a DataError carrying msg.
///
///   ChatTemplate t(config["chat_template"], "tokenizer_config.json");
///   std::string text = t.render({{"user", "Hi"}}, /*add_generation_prompt=*/true, "<s>", "</s>");
class ChatTemplate {
 public:
  ChatTemplate(const std::string& source, std::string origin);
  ~ChatTemplate();
  ChatTemplate(ChatTemplate&&) noexcept;
  ChatTemplate& operator=(ChatTemplate&&) noexcept;

  std::string render(const std::vector<ChatMessage>& messages, bool add_generation_prompt,
                     const std::string& bos_token, const std::string& eos_token) const;

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

/// The chat template of a Hugging Face folder: tokenizer_config.json's `chat_template` (a string,
/// or a list of {name, template} whose "default" is taken), else a chat_template.jinja file; a
/// DataError naming the folder when it has neither.
ChatTemplate load_chat_template(const std::filesystem::path& folder);

}  // namespace lathe::data
