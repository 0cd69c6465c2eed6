// Chat templates: a small Jinja interpreter (lexer, parser to a tree, evaluator) for the
// templates Hugging Face models carry in tokenizer_config.json.
#include "lathe/data/chat_template.h"

#include <algorithm>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <variant>

#include <nlohmann/json.hpp>

#include "lathe/core/error.h"
#include "read_file.h"
#include "wordpiece_greedy.h"

namespace lathe::data {
namespace {

// ---- Values ------------------------------------------------------------------------------------

struct Value;
using List = std::vector<Value>;
using Dict = std::map<std::string, Value>;

struct Value {
  enum class Kind { undefined, none, boolean, integer, number, string, list, dict } kind =
      Kind::undefined;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string s;
  std::shared_ptr<List> list;
  std::shared_ptr<Dict> dict;  // shared: a namespace() is changed in place by {% set ns.x %}

  static Value none() { return with(Kind::none); }
  static Value of(bool v) { Value x = with(Kind::boolean); x.b = v; return x; }
  static Value of(int64_t v) { Value x = with(Kind::integer); x.i = v; return x; }
  static Value of(double v) { Value x = with(Kind::number); x.d = v; return x; }
  static Value of(std::string v) { Value x = with(Kind::string); x.s = std::move(v); return x; }
  static Value of(List v) { Value x = with(Kind::list); x.list = std::make_shared<List>(std::move(v)); return x; }
  static Value of(Dict v) { Value x = with(Kind::dict); x.dict = std::make_shared<Dict>(std::move(v)); return x; }
  static Value with(Kind k) { Value x; x.kind = k; return x; }

  bool truthy() const {
    switch (kind) {
      case Kind::undefined:
      case Kind::none: return false;
      case Kind::boolean: return b;
      case Kind::integer: return i != 0;
      case Kind::number: return d != 0;
      case Kind::string: return !s.empty();
      case Kind::list: return !list->empty();
      case Kind::dict: return !dict->empty();
    }
    return false;
  }
  bool is_number() const { return kind == Kind::integer || kind == Kind::number; }
  double as_double() const { return kind == Kind::integer ? static_cast<double>(i) : d; }
};

/// Python's str() of a value, as Jinja prints it.
std::string to_text(const Value& v);

std::string json_of(const Value& v) {
  nlohmann::json j;
  std::function<nlohmann::json(const Value&)> conv = [&](const Value& x) -> nlohmann::json {
    switch (x.kind) {
      case Value::Kind::undefined:
      case Value::Kind::none: return nullptr;
      case Value::Kind::boolean: return x.b;
      case Value::Kind::integer: return x.i;
      case Value::Kind::number: return x.d;
      case Value::Kind::string: return x.s;
      case Value::Kind::list: {
        nlohmann::json a = nlohmann::json::array();
        for (const auto& e : *x.list) a.push_back(conv(e));
        return a;
      }
      case Value::Kind::dict: {
        nlohmann::json o = nlohmann::json::object();
        for (const auto& [k, e] : *x.dict) o[k] = conv(e);
        return o;
      }
    }
    return nullptr;
  };
  // Python's json.dumps separators: ", " and ": ".
  std::string compact = conv(v).dump(-1, ' ', false);
  std::string out;
  bool in_string = false;
  for (size_t k = 0; k < compact.size(); ++k) {
    const char c = compact[k];
    out += c;
    if (c == '"' && (k == 0 || compact[k - 1] != '\\')) in_string = !in_string;
    if (!in_string && (c == ',' || c == ':')) out += ' ';
  }
  return out;
}

std::string to_text(const Value& v) {
  switch (v.kind) {
    case Value::Kind::undefined: return "";
    case Value::Kind::none: return "None";
    case Value::Kind::boolean: return v.b ? "True" : "False";
    case Value::Kind::integer: return std::to_string(v.i);
    case Value::Kind::number: return fmt::format("{}", v.d);
    case Value::Kind::string: return v.s;
    case Value::Kind::list:
    case Value::Kind::dict: return json_of(v);
  }
  return "";
}

bool equal(const Value& a, const Value& b) {
  if (a.is_number() && b.is_number()) return a.as_double() == b.as_double();
  if (a.kind != b.kind) {
    const bool a_none = a.kind == Value::Kind::none || a.kind == Value::Kind::undefined;
    const bool b_none = b.kind == Value::Kind::none || b.kind == Value::Kind::undefined;
    return a_none && b_none && a.kind == b.kind;
  }
  switch (a.kind) {
    case Value::Kind::boolean: return a.b == b.b;
    case Value::Kind::string: return a.s == b.s;
    case Value::Kind::list:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Value::Kind::dict: return a.dict == b.dict;
    default: return true;
  }
}

// ---- Lexing ------------------------------------------------------------------------------------

struct Token {
  enum class Kind { name, string, integer, number, op, end } kind = Kind::end;
  std::string text;
  int line = 0;
};

struct Fail {
  std::string origin;
  [[noreturn]] void operator()(int line, const std::string& what) const {
    throw DataError(fmt::format("{}: chat template line {}: {}", origin, line, what));
  }
};

std::vector<Token> lex_expression(const std::string& s, int line, const Fail& fail) {
  std::vector<Token> out;
  size_t k = 0;
  while (k < s.size()) {
    const char c = s[k];
    if (c == '\n') ++line;
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++k;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t e = k;
      while (e < s.size() && (std::isalnum(static_cast<unsigned char>(s[e])) || s[e] == '_')) ++e;
      out.push_back({Token::Kind::name, s.substr(k, e - k), line});
      k = e;
    } else if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t e = k;
      while (e < s.size() && std::isdigit(static_cast<unsigned char>(s[e]))) ++e;
      bool real = false;
      if (e + 1 < s.size() && s[e] == '.' && std::isdigit(static_cast<unsigned char>(s[e + 1]))) {
        real = true;
        ++e;
        while (e < s.size() && std::isdigit(static_cast<unsigned char>(s[e]))) ++e;
      }
      out.push_back({real ? Token::Kind::number : Token::Kind::integer, s.substr(k, e - k), line});
      k = e;
    } else if (c == '\'' || c == '"') {
      std::string text;
      size_t e = k + 1;
      for (; e < s.size() && s[e] != c; ++e) {
        if (s[e] == '\\' && e + 1 < s.size()) {
          const char n = s[++e];
          switch (n) {
            case 'n': text += '\n'; break;
            case 't': text += '\t'; break;
            case 'r': text += '\r'; break;
            default: text += n;
          }
        } else {
          if (s[e] == '\n') ++line;
          text += s[e];
        }
      }
      if (e >= s.size()) fail(line, "a string is not closed");
      out.push_back({Token::Kind::string, text, line});
      k = e + 1;
    } else {
      static const char* kOps[] = {"==", "!=", "<=", ">=", "//", "**", "(", ")", "[", "]", "{",
                                   "}",  ".",  ",",  ":",  "|",  "+",  "-", "*", "/", "%", "~",
                                   "<",  ">",  "="};
      bool found = false;
      for (const char* op : kOps) {
        const size_t n = std::char_traits<char>::length(op);
        if (s.compare(k, n, op) == 0) {
          out.push_back({Token::Kind::op, op, line});
          k += n;
          found = true;
          break;
        }
      }
      if (!found) fail(line, fmt::format("unexpected character '{}'", c));
    }
  }
  out.push_back({Token::Kind::end, "", line});
  return out;
}

// ---- Expressions -------------------------------------------------------------------------------

struct Context;
struct Expr {
  virtual ~Expr() = default;
  virtual Value eval(Context& c) const = 0;
  int line = 0;
};
using ExprPtr = std::shared_ptr<Expr>;

struct Context {
  std::vector<std::map<std::string, Value>> scopes;
  Fail fail;
  Value lookup(const std::string& name) const {
    for (auto it = scopes.rbegin(); it != scopes.rend(); ++it) {
      const auto f = it->find(name);
      if (f != it->end()) return f->second;
    }
    return Value{};
  }
  void set(const std::string& name, Value v) { scopes.back()[name] = std::move(v); }
};

struct Literal : Expr {
  Value v;
  Value eval(Context&) const override { return v; }
};
struct Name : Expr {
  std::string name;
  Value eval(Context& c) const override { return c.lookup(name); }
};
struct ListExpr : Expr {
  std::vector<ExprPtr> items;
  Value eval(Context& c) const override {
    List l;
    for (const auto& e : items) l.push_back(e->eval(c));
    return Value::of(std::move(l));
  }
};
struct DictExpr : Expr {
  std::vector<std::pair<ExprPtr, ExprPtr>> items;
  Value eval(Context& c) const override {
    Dict d;
    for (const auto& [k, v] : items) d[to_text(k->eval(c))] = v->eval(c);
    return Value::of(std::move(d));
  }
};

Value attribute(const Value& v, const std::string& name) {
  if (v.kind == Value::Kind::dict) {
    const auto it = v.dict->find(name);
    if (it != v.dict->end()) return it->second;
  }
  return Value{};
}

struct Attr : Expr {
  ExprPtr object;
  std::string name;
  Value eval(Context& c) const override { return attribute(object->eval(c), name); }
};

int64_t index_of(int64_t k, int64_t n) { return k < 0 ? k + n : k; }

/// Byte offsets of the characters of UTF-8 `s`, then its end: strings index by character.
std::vector<size_t> char_starts(const std::string& s) {
  std::vector<size_t> cut;
  for (size_t i = 0; i < s.size(); i += detail::utf8_length(static_cast<unsigned char>(s[i])))
    cut.push_back(i);
  cut.push_back(s.size());
  return cut;
}

struct Index : Expr {
  ExprPtr object, key;
  Value eval(Context& c) const override {
    const Value o = object->eval(c), k = key->eval(c);
    if (o.kind == Value::Kind::dict) return attribute(o, to_text(k));
    if (k.kind == Value::Kind::integer) {
      if (o.kind == Value::Kind::list) {
        const int64_t at = index_of(k.i, static_cast<int64_t>(o.list->size()));
        if (at >= 0 && at < static_cast<int64_t>(o.list->size())) return (*o.list)[static_cast<size_t>(at)];
        return Value{};
      }
      if (o.kind == Value::Kind::string) {
        const std::vector<size_t> cut = char_starts(o.s);
        const int64_t n = static_cast<int64_t>(cut.size()) - 1;
        const int64_t at = index_of(k.i, n);
        if (at >= 0 && at < n)
          return Value::of(o.s.substr(cut[static_cast<size_t>(at)],
                                      cut[static_cast<size_t>(at) + 1] - cut[static_cast<size_t>(at)]));
      }
    }
    return Value{};
  }
};

struct Slice : Expr {
  ExprPtr object, start, stop;
  Value eval(Context& c) const override {
    const Value o = object->eval(c);
    const std::vector<size_t> cut = o.kind == Value::Kind::string ? char_starts(o.s)
                                                                  : std::vector<size_t>{0};
    const int64_t n = o.kind == Value::Kind::list ? static_cast<int64_t>(o.list->size())
                                                  : static_cast<int64_t>(cut.size()) - 1;
    const auto bound = [&](const ExprPtr& e, int64_t fallback) {
      if (!e) return fallback;
      const Value v = e->eval(c);
      if (v.kind != Value::Kind::integer) return fallback;
      return std::clamp<int64_t>(index_of(v.i, n), 0, n);
    };
    const int64_t a = bound(start, 0), b = std::max(bound(stop, n), a);
    if (o.kind == Value::Kind::list)
      return Value::of(List(o.list->begin() + a, o.list->begin() + b));
    if (o.kind == Value::Kind::string)
      return Value::of(o.s.substr(cut[static_cast<size_t>(a)],
                                  cut[static_cast<size_t>(b)] - cut[static_cast<size_t>(a)]));
    return Value{};
  }
};

std::string strip_chars(const std::string& s, bool left, bool right, const std::string& chars) {
  const auto strip = [&](char ch) {
    return chars.empty() ? std::isspace(static_cast<unsigned char>(ch)) != 0
                         : chars.find(ch) != std::string::npos;
  };
  size_t a = 0, b = s.size();
  if (left) while (a < b && strip(s[a])) ++a;
  if (right) while (b > a && strip(s[b - 1])) --b;
  return s.substr(a, b - a);
}

std::string cased(std::string s, bool upper) {
  for (auto& ch : s) ch = static_cast<char>(upper ? std::toupper(static_cast<unsigned char>(ch))
                                                  : std::tolower(static_cast<unsigned char>(ch)));
  return s;
}

struct Call : Expr {
  ExprPtr callee;  // a Name (function) or an Attr (method)
  std::vector<ExprPtr> args;
  std::vector<std::pair<std::string, ExprPtr>> kwargs;
  Value eval(Context& c) const override {
    std::vector<Value> a;
    for (const auto& e : args) a.push_back(e->eval(c));
    const auto arg = [&](size_t k) { return k < a.size() ? a[k] : Value{}; };
    if (const auto* n = dynamic_cast<const Name*>(callee.get())) {
      if (n->name == "raise_exception")
        throw DataError(fmt::format("{}: the chat template refused the conversation: {}",
                                    c.fail.origin, to_text(arg(0))));
      if (n->name == "namespace") {
        Dict d;
        for (const auto& [k, e] : kwargs) d[k] = e->eval(c);
        return Value::of(std::move(d));
      }
      if (n->name == "range") {
        int64_t from = 0, to = arg(0).i;
        if (a.size() > 1) from = arg(0).i, to = arg(1).i;
        List l;
        for (int64_t k = from; k < to; ++k) l.push_back(Value::of(k));
        return Value::of(std::move(l));
      }
      c.fail(line, fmt::format("'{}' is not a function chat templates have", n->name));
    }
    if (const auto* m = dynamic_cast<const Attr*>(callee.get())) {
      const Value self = m->object->eval(c);
      const std::string& f = m->name;
      if (self.kind == Value::Kind::string) {
        const std::string chars = arg(0).kind == Value::Kind::string ? arg(0).s : "";
        if (f == "strip") return Value::of(strip_chars(self.s, true, true, chars));
        if (f == "lstrip") return Value::of(strip_chars(self.s, true, false, chars));
        if (f == "rstrip") return Value::of(strip_chars(self.s, false, true, chars));
        if (f == "startswith") return Value::of(self.s.rfind(arg(0).s, 0) == 0);
        if (f == "endswith")
          return Value::of(self.s.size() >= arg(0).s.size() &&
                           self.s.compare(self.s.size() - arg(0).s.size(), arg(0).s.size(), arg(0).s) == 0);
        if (f == "upper" || f == "lower") return Value::of(cased(self.s, f == "upper"));
        if (f == "split") {
          List parts;
          const std::string sep = arg(0).kind == Value::Kind::string ? arg(0).s : " ";
          size_t from = 0;
          for (size_t at = self.s.find(sep); at != std::string::npos; at = self.s.find(sep, from)) {
            parts.push_back(Value::of(self.s.substr(from, at - from)));
            from = at + sep.size();
          }
          parts.push_back(Value::of(self.s.substr(from)));
          return Value::of(std::move(parts));
        }
      }
      if (self.kind == Value::Kind::dict) {
        if (f == "items") {
          List l;
          for (const auto& [k, v] : *self.dict) l.push_back(Value::of(List{Value::of(k), v}));
          return Value::of(std::move(l));
        }
        if (f == "get") {
          const Value v = attribute(self, to_text(arg(0)));
          return v.kind == Value::Kind::undefined ? (a.size() > 1 ? a[1] : Value::none()) : v;
        }
      }
      c.fail(line, fmt::format("no method '{}' on this value", f));
    }
    c.fail(line, "only functions and methods can be called");
  }
};

struct Filter : Expr {
  ExprPtr value;
  std::string name;
  std::vector<ExprPtr> args;
  Value eval(Context& c) const override {
    const Value v = value->eval(c);
    if (name == "trim") return Value::of(strip_chars(to_text(v), true, true, ""));
    if (name == "upper" || name == "lower") return Value::of(cased(to_text(v), name == "upper"));
    if (name == "string") return Value::of(to_text(v));
    if (name == "tojson") return Value::of(json_of(v));
    if (name == "length" || name == "count") {
      if (v.kind == Value::Kind::list) return Value::of(static_cast<int64_t>(v.list->size()));
      if (v.kind == Value::Kind::dict) return Value::of(static_cast<int64_t>(v.dict->size()));
      return Value::of(static_cast<int64_t>(detail::utf8_count(to_text(v))));  // characters
    }
    if (name == "first" || name == "last") {
      if (v.kind != Value::Kind::list || v.list->empty()) return Value{};
      return name == "first" ? v.list->front() : v.list->back();
    }
    if (name == "join") {
      const std::string sep = args.empty() ? "" : to_text(args[0]->eval(c));
      std::string out;
      if (v.kind == Value::Kind::list)
        for (size_t k = 0; k < v.list->size(); ++k) out += (k ? sep : "") + to_text((*v.list)[k]);
      return Value::of(out);
    }
    c.fail(line, fmt::format("'{}' is not a filter chat templates have", name));
  }
};

struct Test : Expr {
  ExprPtr value;
  std::string name;
  bool negate = false;
  Value eval(Context& c) const override {
    const Value v = value->eval(c);
    bool r = false;
    if (name == "defined") r = v.kind != Value::Kind::undefined;
    else if (name == "undefined") r = v.kind == Value::Kind::undefined;
    else if (name == "none") r = v.kind == Value::Kind::none;
    else if (name == "string") r = v.kind == Value::Kind::string;
    else if (name == "number") r = v.is_number();
    else if (name == "mapping") r = v.kind == Value::Kind::dict;
    else if (name == "iterable" || name == "sequence")
      r = v.kind == Value::Kind::list || v.kind == Value::Kind::string || v.kind == Value::Kind::dict;
    else if (name == "true") r = v.kind == Value::Kind::boolean && v.b;
    else if (name == "false") r = v.kind == Value::Kind::boolean && !v.b;
    else c.fail(line, fmt::format("'{}' is not a test chat templates have", name));
    return Value::of(r != negate);
  }
};

struct Unary : Expr {
  std::string op;
  ExprPtr operand;
  Value eval(Context& c) const override {
    const Value v = operand->eval(c);
    if (op == "not") return Value::of(!v.truthy());
    if (v.kind == Value::Kind::integer) return Value::of(-v.i);
    return Value::of(-v.as_double());
  }
};

struct Binary : Expr {
  std::string op;
  ExprPtr left, right;
  Value eval(Context& c) const override {
    if (op == "and") {
      const Value l = left->eval(c);
      return l.truthy() ? right->eval(c) : l;
    }
    if (op == "or") {
      const Value l = left->eval(c);
      return l.truthy() ? l : right->eval(c);
    }
    const Value l = left->eval(c), r = right->eval(c);
    if (op == "~") return Value::of(to_text(l) + to_text(r));
    if (op == "==") return Value::of(equal(l, r));
    if (op == "!=") return Value::of(!equal(l, r));
    if (op == "in" || op == "not in") {
      bool found = false;
      if (r.kind == Value::Kind::string) found = r.s.find(to_text(l)) != std::string::npos;
      else if (r.kind == Value::Kind::list)
        found = std::any_of(r.list->begin(), r.list->end(), [&](const Value& e) { return equal(e, l); });
      else if (r.kind == Value::Kind::dict) found = r.dict->count(to_text(l)) != 0;
      return Value::of(op == "in" ? found : !found);
    }
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int cmp = 0;
      if (l.kind == Value::Kind::string && r.kind == Value::Kind::string) cmp = l.s.compare(r.s);
      else cmp = l.as_double() < r.as_double() ? -1 : l.as_double() > r.as_double() ? 1 : 0;
      return Value::of(op == "<" ? cmp < 0 : op == ">" ? cmp > 0 : op == "<=" ? cmp <= 0 : cmp >= 0);
    }
    if (op == "+") {
      if (l.kind == Value::Kind::string && r.kind == Value::Kind::string) return Value::of(l.s + r.s);
      if (l.kind == Value::Kind::list && r.kind == Value::Kind::list) {
        List out = *l.list;
        out.insert(out.end(), r.list->begin(), r.list->end());
        return Value::of(std::move(out));
      }
    }
    if (!l.is_number() || !r.is_number())
      c.fail(line, fmt::format("'{}' needs numbers (or two strings / lists for +)", op));
    const bool ints = l.kind == Value::Kind::integer && r.kind == Value::Kind::integer;
    if (op == "+") return ints ? Value::of(l.i + r.i) : Value::of(l.as_double() + r.as_double());
    if (op == "-") return ints ? Value::of(l.i - r.i) : Value::of(l.as_double() - r.as_double());
    if (op == "*") return ints ? Value::of(l.i * r.i) : Value::of(l.as_double() * r.as_double());
    if (op == "/") return Value::of(l.as_double() / r.as_double());
    if ((op == "%" || op == "//") && ints) {
      if (r.i == 0) c.fail(line, "division by zero");
      const int64_t q = l.i / r.i - ((l.i % r.i != 0) && ((l.i < 0) != (r.i < 0)) ? 1 : 0);
      return op == "//" ? Value::of(q) : Value::of(l.i - q * r.i);
    }
    c.fail(line, fmt::format("'{}' is not an operator lathe's chat templates evaluate here", op));
  }
};

struct Conditional : Expr {
  ExprPtr then, cond, otherwise;
  Value eval(Context& c) const override {
    if (cond->eval(c).truthy()) return then->eval(c);
    return otherwise ? otherwise->eval(c) : Value{};
  }
};

class ExprParser {
 public:
  ExprParser(std::vector<Token> t, const Fail& fail) : t_(std::move(t)), fail_(fail) {}
  ExprPtr parse() { return conditional(); }
  /// An expression without a trailing `if` (a for loop's iterable, before its filter).
  ExprPtr parse_or() { return or_expr(); }
  bool at_end() const { return peek().kind == Token::Kind::end; }
  const Token& peek(size_t ahead = 0) const { return t_[std::min(k_ + ahead, t_.size() - 1)]; }
  bool accept(const std::string& text) {
    if (peek().kind != Token::Kind::end && peek().kind != Token::Kind::string && peek().text == text) {
      ++k_;
      return true;
    }
    return false;
  }
  void expect(const std::string& text) {
    if (!accept(text)) fail_(peek().line, fmt::format("expected '{}', found '{}'", text, peek().text));
  }
  std::string name() {
    if (peek().kind != Token::Kind::name) fail_(peek().line, fmt::format("expected a name, found '{}'", peek().text));
    return t_[k_++].text;
  }

 private:
  template <class T>
  std::shared_ptr<T> node() {
    auto n = std::make_shared<T>();
    n->line = peek().line;
    return n;
  }
  ExprPtr binary(const std::string& op, ExprPtr l, ExprPtr r) {
    auto b = node<Binary>();
    b->op = op;
    b->left = std::move(l);
    b->right = std::move(r);
    return b;
  }
  ExprPtr conditional() {
    ExprPtr e = or_expr();
    if (accept("if")) {
      auto c = node<Conditional>();
      c->then = e;
      c->cond = or_expr();
      if (accept("else")) c->otherwise = conditional();
      return c;
    }
    return e;
  }
  ExprPtr or_expr() {
    ExprPtr e = and_expr();
    while (accept("or")) e = binary("or", e, and_expr());
    return e;
  }
  ExprPtr and_expr() {
    ExprPtr e = not_expr();
    while (accept("and")) e = binary("and", e, not_expr());
    return e;
  }
  ExprPtr not_expr() {
    if (accept("not")) {
      auto u = node<Unary>();
      u->op = "not";
      u->operand = not_expr();
      return u;
    }
    return compare();
  }
  ExprPtr compare() {
    ExprPtr e = concat();
    for (;;) {
      if (peek().kind == Token::Kind::op &&
          (peek().text == "==" || peek().text == "!=" || peek().text == "<" ||
           peek().text == ">" || peek().text == "<=" || peek().text == ">=")) {
        const std::string op = t_[k_++].text;
        e = binary(op, e, concat());
      } else if (accept("in")) {
        e = binary("in", e, concat());
      } else if (peek().text == "not" && peek(1).text == "in") {
        k_ += 2;
        e = binary("not in", e, concat());
      } else if (accept("is")) {
        auto t = node<Test>();
        t->negate = accept("not");
        t->name = name();
        t->value = e;
        e = t;
      } else {
        return e;
      }
    }
  }
  ExprPtr concat() {
    ExprPtr e = additive();
    while (accept("~")) e = binary("~", e, additive());
    return e;
  }
  ExprPtr additive() {
    ExprPtr e = multiplicative();
    for (;;) {
      if (accept("+")) e = binary("+", e, multiplicative());
      else if (accept("-")) e = binary("-", e, multiplicative());
      else return e;
    }
  }
  ExprPtr multiplicative() {
    ExprPtr e = unary();
    for (;;) {
      if (accept("*")) e = binary("*", e, unary());
      else if (accept("//")) e = binary("//", e, unary());
      else if (accept("/")) e = binary("/", e, unary());
      else if (accept("%")) e = binary("%", e, unary());
      else return e;
    }
  }
  ExprPtr unary() {
    if (accept("-")) {
      auto u = node<Unary>();
      u->op = "-";
      u->operand = unary();
      return u;
    }
    return filtered();
  }
  ExprPtr filtered() {
    ExprPtr e = postfix();
    while (accept("|")) {
      auto f = node<Filter>();
      f->value = e;
      f->name = name();
      if (accept("(")) {
        if (!accept(")")) {
          do f->args.push_back(conditional());
          while (accept(","));
          expect(")");
        }
      }
      e = f;
    }
    return e;
  }
  ExprPtr postfix() {
    ExprPtr e = primary();
    for (;;) {
      if (accept(".")) {
        auto a = node<Attr>();
        a->object = e;
        a->name = name();
        e = a;
      } else if (accept("[")) {
        ExprPtr first;
        if (peek().text != ":") first = conditional();
        if (accept(":")) {
          auto s = node<Slice>();
          s->object = e;
          s->start = first;
          if (peek().text != "]") s->stop = conditional();
          e = s;
        } else {
          auto i = node<Index>();
          i->object = e;
          i->key = first;
          e = i;
        }
        expect("]");
      } else if (peek().text == "(" && peek().kind == Token::Kind::op) {
        ++k_;
        auto c = node<Call>();
        c->callee = e;
        if (!accept(")")) {
          do {
            if (peek().kind == Token::Kind::name && peek(1).text == "=") {
              std::string key = name();
              expect("=");
              c->kwargs.emplace_back(key, conditional());
            } else {
              c->args.push_back(conditional());
            }
          } while (accept(","));
          expect(")");
        }
        e = c;
      } else {
        return e;
      }
    }
  }
  ExprPtr primary() {
    const Token& t = peek();
    if (t.kind == Token::Kind::string) {
      auto l = node<Literal>();
      std::string text = t_[k_++].text;
      while (peek().kind == Token::Kind::string) text += t_[k_++].text;  // 'a' 'b' joins
      l->v = Value::of(text);
      return l;
    }
    if (t.kind == Token::Kind::integer || t.kind == Token::Kind::number) {
      auto l = node<Literal>();
      l->v = t.kind == Token::Kind::integer ? Value::of(static_cast<int64_t>(std::stoll(t.text)))
                                            : Value::of(std::stod(t.text));
      ++k_;
      return l;
    }
    if (t.kind == Token::Kind::name) {
      auto l = node<Literal>();
      if (t.text == "true" || t.text == "True") l->v = Value::of(true);
      else if (t.text == "false" || t.text == "False") l->v = Value::of(false);
      else if (t.text == "none" || t.text == "None") l->v = Value::none();
      else {
        auto n = node<Name>();
        n->name = name();
        return n;
      }
      ++k_;
      return l;
    }
    if (accept("(")) {
      ExprPtr e = conditional();
      expect(")");
      return e;
    }
    if (accept("[")) {
      auto l = node<ListExpr>();
      if (!accept("]")) {
        do l->items.push_back(conditional());
        while (accept(",") && peek().text != "]");
        expect("]");
      }
      return l;
    }
    if (accept("{")) {
      auto d = node<DictExpr>();
      if (!accept("}")) {
        do {
          ExprPtr k = conditional();
          expect(":");
          d->items.emplace_back(k, conditional());
        } while (accept(","));
        expect("}");
      }
      return d;
    }
    fail_(t.line, fmt::format("unexpected '{}' in an expression", t.text));
  }

  std::vector<Token> t_;
  size_t k_ = 0;
  const Fail& fail_;
};

// ---- Statements --------------------------------------------------------------------------------

struct Node {
  virtual ~Node() = default;
  virtual void render(Context& c, std::string& out) const = 0;
};
using NodePtr = std::shared_ptr<Node>;
using Body = std::vector<NodePtr>;

void render_body(const Body& body, Context& c, std::string& out) {
  for (const auto& n : body) n->render(c, out);
}

struct TextNode : Node {
  std::string text;
  void render(Context&, std::string& out) const override { out += text; }
};
struct OutputNode : Node {
  ExprPtr expr;
  void render(Context& c, std::string& out) const override { out += to_text(expr->eval(c)); }
};
struct IfNode : Node {
  std::vector<std::pair<ExprPtr, Body>> branches;  // a null condition is the else branch
  void render(Context& c, std::string& out) const override {
    for (const auto& [cond, body] : branches)
      if (!cond || cond->eval(c).truthy()) {
        render_body(body, c, out);
        return;
      }
  }
};
struct ForNode : Node {
  std::vector<std::string> names;
  ExprPtr iterable, filter;
  Body body, otherwise;
  void render(Context& c, std::string& out) const override {
    const Value v = iterable->eval(c);
    List items;
    if (v.kind == Value::Kind::list) items = *v.list;
    else if (v.kind == Value::Kind::dict)
      for (const auto& [k, e] : *v.dict) items.push_back(Value::of(k));
    else if (v.kind == Value::Kind::string)
      for (const char ch : v.s) items.push_back(Value::of(std::string(1, ch)));
    if (filter) {
      List kept;
      for (const auto& item : items) {
        c.scopes.emplace_back();
        bind(c, item);
        if (filter->eval(c).truthy()) kept.push_back(item);
        c.scopes.pop_back();
      }
      items = std::move(kept);
    }
    if (items.empty()) {
      render_body(otherwise, c, out);
      return;
    }
    const auto n = static_cast<int64_t>(items.size());
    for (int64_t k = 0; k < n; ++k) {
      c.scopes.emplace_back();
      bind(c, items[static_cast<size_t>(k)]);
      Dict loop;
      loop["index"] = Value::of(k + 1);
      loop["index0"] = Value::of(k);
      loop["revindex"] = Value::of(n - k);
      loop["revindex0"] = Value::of(n - k - 1);
      loop["first"] = Value::of(k == 0);
      loop["last"] = Value::of(k == n - 1);
      loop["length"] = Value::of(n);
      loop["previtem"] = k > 0 ? items[static_cast<size_t>(k - 1)] : Value{};
      loop["nextitem"] = k + 1 < n ? items[static_cast<size_t>(k + 1)] : Value{};
      c.set("loop", Value::of(std::move(loop)));
      render_body(body, c, out);
      c.scopes.pop_back();
    }
  }
  void bind(Context& c, const Value& item) const {
    if (names.size() == 1) {
      c.set(names[0], item);
      return;
    }
    for (size_t k = 0; k < names.size(); ++k)
      c.set(names[k], item.kind == Value::Kind::list && k < item.list->size() ? (*item.list)[k] : Value{});
  }
};
struct SetNode : Node {
  std::string name, attribute;  // attribute: {% set ns.attr = ... %}
  ExprPtr value;
  void render(Context& c, std::string&) const override {
    Value v = value->eval(c);
    if (attribute.empty()) {
      c.set(name, std::move(v));
      return;
    }
    const Value target = c.lookup(name);
    if (target.kind != Value::Kind::dict) c.fail(0, fmt::format("'{}' is not a namespace", name));
    (*target.dict)[attribute] = std::move(v);
  }
};

/// One piece of the template between the lexer and the parser.
struct Piece {
  enum class Kind { text, output, statement } kind;
  std::string text;
  int line;
};

std::vector<Piece> split_template(const std::string& src, const Fail& fail) {
  std::vector<Piece> out;
  size_t k = 0;
  int line = 1;
  bool strip_next = false;   // a '-' closed the previous tag: strip the text's leading space
  bool trim_newline = false;  // trim_blocks: the previous tag was a block (or comment)
  const auto count_lines = [&](size_t from, size_t to) {
    line += static_cast<int>(std::count(src.begin() + static_cast<long>(from), src.begin() + static_cast<long>(to), '\n'));
  };
  while (k <= src.size()) {
    const size_t open = src.find('{', k);
    size_t tag = std::string::npos;
    for (size_t at = open; at != std::string::npos; at = src.find('{', at + 1)) {
      if (at + 1 < src.size() && (src[at + 1] == '{' || src[at + 1] == '%' || src[at + 1] == '#')) {
        tag = at;
        break;
      }
    }
    std::string text = src.substr(k, tag == std::string::npos ? std::string::npos : tag - k);
    if (trim_newline && !text.empty() && text[0] == '\n') text.erase(0, 1);
    if (strip_next) text = strip_chars(text, true, false, "");
    const int text_line = line;
    count_lines(k, tag == std::string::npos ? src.size() : tag);
    if (tag == std::string::npos) {
      if (!text.empty()) out.push_back({Piece::Kind::text, text, text_line});
      break;
    }
    const char kind = src[tag + 1];
    const bool minus_open = tag + 2 < src.size() && src[tag + 2] == '-';
    if (minus_open) {
      text = strip_chars(text, false, true, "");
    } else if (kind == '%' || kind == '#') {
      // lstrip_blocks: the spaces and tabs between the start of the tag's line and the tag go.
      size_t j = tag;
      while (j > k && (src[j - 1] == ' ' || src[j - 1] == '\t')) --j;
      if (j == 0 || src[j - 1] == '\n') text.erase(text.size() - std::min(text.size(), tag - j));
    }
    if (!text.empty()) out.push_back({Piece::Kind::text, text, text_line});
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    const size_t end = src.find(close, tag + 2);
    if (end == std::string::npos) fail(line, fmt::format("a '{{{}' is not closed", kind));
    const bool minus_close = end > tag + 2 && src[end - 1] == '-';
    const size_t body_from = tag + 2 + (minus_open ? 1 : 0);
    const size_t body_to = end - (minus_close && end - 1 >= body_from ? 1 : 0);
    const std::string body = src.substr(body_from, body_to > body_from ? body_to - body_from : 0);
    if (kind != '#')
      out.push_back({kind == '{' ? Piece::Kind::output : Piece::Kind::statement, body, line});
    count_lines(tag, end + 2);
    strip_next = minus_close;
    trim_newline = kind != '{';
    k = end + 2;
  }
  return out;
}

class Parser {
 public:
  Parser(std::vector<Piece> pieces, const Fail& fail) : p_(std::move(pieces)), fail_(fail) {}

  Body parse_all() {
    std::string stop;
    Body body = parse_body({}, stop);
    return body;
  }

 private:
  /// Parses nodes until a statement whose first word is in `stops` (returned in `stop`).
  Body parse_body(const std::vector<std::string>& stops, std::string& stop) {
    Body body;
    while (k_ < p_.size()) {
      const Piece& piece = p_[k_];
      if (piece.kind == Piece::Kind::text) {
        auto t = std::make_shared<TextNode>();
        t->text = piece.text;
        body.push_back(t);
        ++k_;
        continue;
      }
      ExprParser e(lex_expression(piece.text, piece.line, fail_), fail_);
      if (piece.kind == Piece::Kind::output) {
        auto o = std::make_shared<OutputNode>();
        o->expr = e.parse();
        if (!e.at_end()) fail_(piece.line, fmt::format("unexpected '{}' in {{{{ }}}}", e.peek().text));
        body.push_back(o);
        ++k_;
        continue;
      }
      const std::string word = e.peek().kind == Token::Kind::name ? e.peek().text : "";
      if (std::find(stops.begin(), stops.end(), word) != stops.end()) {
        stop = word;
        return body;
      }
      ++k_;
      e.name();
      if (word == "if") {
        auto n = std::make_shared<IfNode>();
        ExprPtr cond = e.parse();
        for (;;) {
          std::string s;
          Body b = parse_body({"elif", "else", "endif"}, s);
          n->branches.emplace_back(cond, std::move(b));
          if (s.empty()) fail_(piece.line, "an {% if %} has no {% endif %}");
          ExprParser next(lex_expression(p_[k_].text, p_[k_].line, fail_), fail_);
          next.name();
          ++k_;
          if (s == "endif") break;
          cond = s == "elif" ? next.parse() : nullptr;
          if (s == "else") {
            std::string s2;
            Body b2 = parse_body({"endif"}, s2);
            if (s2.empty()) fail_(piece.line, "an {% if %} has no {% endif %}");
            n->branches.emplace_back(nullptr, std::move(b2));
            ++k_;
            break;
          }
        }
        body.push_back(n);
      } else if (word == "for") {
        auto n = std::make_shared<ForNode>();
        do n->names.push_back(e.name());
        while (e.accept(","));
        e.expect("in");
        n->iterable = e.parse_or();
        if (e.accept("if")) n->filter = e.parse_or();
        std::string s;
        n->body = parse_body({"else", "endfor"}, s);
        if (s.empty()) fail_(piece.line, "a {% for %} has no {% endfor %}");
        ++k_;
        if (s == "else") {
          std::string s2;
          n->otherwise = parse_body({"endfor"}, s2);
          if (s2.empty()) fail_(piece.line, "a {% for %} has no {% endfor %}");
          ++k_;
        }
        body.push_back(n);
      } else if (word == "set") {
        auto n = std::make_shared<SetNode>();
        n->name = e.name();
        if (e.accept(".")) n->attribute = e.name();
        e.expect("=");
        n->value = e.parse();
        body.push_back(n);
      } else {
        fail_(piece.line, fmt::format("'{{% {} %}}' is not a statement chat templates have", word));
      }
    }
    return body;
  }

  std::vector<Piece> p_;
  size_t k_ = 0;
  const Fail& fail_;
};

}  // namespace

struct ChatTemplate::Impl {
  Body body;
  Fail fail;
};

ChatTemplate::ChatTemplate(const std::string& source, std::string origin)
    : impl_(std::make_unique<Impl>()) {
  impl_->fail = Fail{std::move(origin)};
  impl_->body = Parser(split_template(source, impl_->fail), impl_->fail).parse_all();
}
ChatTemplate::~ChatTemplate() = default;
ChatTemplate::ChatTemplate(ChatTemplate&&) noexcept = default;
ChatTemplate& ChatTemplate::operator=(ChatTemplate&&) noexcept = default;

std::string ChatTemplate::render(const std::vector<ChatMessage>& messages,
                                 bool add_generation_prompt, const std::string& bos_token,
                                 const std::string& eos_token) const {
  Context c{{{}}, impl_->fail};
  List list;
  for (const auto& m : messages)
    list.push_back(Value::of(Dict{{"role", Value::of(m.role)}, {"content", Value::of(m.content)}}));
  c.set("messages", Value::of(std::move(list)));
  c.set("add_generation_prompt", Value::of(add_generation_prompt));
  c.set("bos_token", Value::of(bos_token));
  c.set("eos_token", Value::of(eos_token));
  std::string out;
  render_body(impl_->body, c, out);
  return out;
}

ChatTemplate load_chat_template(const std::filesystem::path& folder) {
  const auto config = folder / "tokenizer_config.json";
  std::error_code ec;
  if (std::filesystem::exists(config, ec)) {
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(detail::read_file(config, "tokenizer config"));
    } catch (const nlohmann::json::parse_error& e) {
      throw DataError(fmt::format("{}: not valid JSON (byte {})", config.string(), e.byte));
    }
    if (j.is_object() && j.contains("chat_template")) {
      const auto& t = j["chat_template"];
      if (t.is_string()) return ChatTemplate(t.get<std::string>(), config.string());
      if (t.is_array())
        for (const auto& entry : t)
          if (entry.is_object() && entry.value("name", "") == "default" &&
              entry.contains("template") && entry["template"].is_string())
            return ChatTemplate(entry["template"].get<std::string>(), config.string());
      throw DataError(fmt::format("{}: chat_template: expected a template string or a list of "
                                  "{{name, template}} with a \"default\"",
                                  config.string()));
    }
  }
  const auto jinja = folder / "chat_template.jinja";
  if (std::filesystem::exists(jinja, ec))
    return ChatTemplate(detail::read_file(jinja, "chat template"), jinja.string());
  throw DataError(fmt::format("{}: no chat template (tokenizer_config.json has no chat_template "
                              "and there is no chat_template.jinja)",
                              folder.string()));
}

}  // namespace lathe::data
