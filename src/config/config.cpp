// YAML → RunConfig: overrides, typed reads with file:line:key errors, and the resolved YAML back.
#include "lathe/config/config.h"

#include <fstream>
#include <map>
#include <sstream>
#include <type_traits>

#include <fmt/ranges.h>
#include <yaml-cpp/yaml.h>

#include "lathe/config/optim_names.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"

namespace lathe::config {
namespace {

/// What every reader needs to say where a value came from.
struct Origin {
  std::string file;
  std::map<std::string, std::string> overrides;  ///< dotted key → "override 'k=v'"
  mutable std::map<std::string, std::string> read;  ///< dotted key → where it was set

  std::string where(const YAML::Node& node, const std::string& dotted) const {
    if (const auto it = overrides.find(dotted); it != overrides.end()) return it->second;
    if (node.IsDefined() && !node.Mark().is_null())
      return fmt::format("{}:{}", file, node.Mark().line + 1);
    return file;
  }
};

std::string describe(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: return "a mapping";
    case YAML::NodeType::Sequence: return "a list";
    case YAML::NodeType::Null: return "nothing";
    default: return fmt::format("'{}'", node.Scalar());
  }
}

const std::string& scalar_of(const YAML::Node& node, const std::string& where,
                             const std::string& key, const char* expected) {
  LATHE_CHECK(node.IsScalar(), ConfigError, "{}: key '{}' expects {}, got {}", where, key,
              expected, describe(node));
  return node.Scalar();
}

void convert(const YAML::Node& n, const std::string& w, const std::string& k, std::string& out) {
  out = scalar_of(n, w, k, "a string");
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k, int64_t& out) {
  out = parse_int(scalar_of(n, w, k, "an integer"), w, k);
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k, int& out) {
  const int64_t v = parse_int(scalar_of(n, w, k, "an integer"), w, k);
  LATHE_CHECK(v >= INT32_MIN && v <= INT32_MAX, ConfigError, "{}: key '{}' = {} is out of range",
              w, k, v);
  out = static_cast<int>(v);
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k, uint64_t& out) {
  const int64_t v = parse_int(scalar_of(n, w, k, "an integer"), w, k);
  LATHE_CHECK(v >= 0, ConfigError, "{}: key '{}' expects a non-negative integer, got {}", w, k, v);
  out = static_cast<uint64_t>(v);
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k, double& out) {
  out = parse_double(scalar_of(n, w, k, "a number"), w, k);
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k, bool& out) {
  out = parse_bool(scalar_of(n, w, k, "true or false"), w, k);
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k,
             std::vector<double>& out) {
  LATHE_CHECK(n.IsSequence(), ConfigError, "{}: key '{}' expects a list of numbers, got {}", w, k,
              describe(n));
  out.clear();
  for (const auto& item : n) out.push_back(parse_double(scalar_of(item, w, k, "a number"), w, k));
}

void convert(const YAML::Node& n, const std::string& w, const std::string& k,
             std::vector<std::string>& out) {
  out.clear();
  if (n.IsScalar()) {  // a single pattern may be written without brackets
    out.push_back(n.Scalar());
    return;
  }
  LATHE_CHECK(n.IsSequence(), ConfigError, "{}: key '{}' expects a list of strings, got {}", w, k,
              describe(n));
  for (const auto& item : n) out.push_back(scalar_of(item, w, k, "a string"));
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k,
             std::vector<int64_t>& out) {
  LATHE_CHECK(n.IsSequence(), ConfigError, "{}: key '{}' expects a list of integers, got {}", w, k,
              describe(n));
  out.clear();
  for (const auto& item : n) out.push_back(parse_int(scalar_of(item, w, k, "an integer"), w, k));
}

/// Reads the keys of one mapping into struct fields; `finish` rejects the keys nobody read.
class Section {
  /// A mapping key as text; a list or mapping used as a key is a ConfigError (yaml-cpp's own
  /// conversion would throw a bare "bad conversion", as the config fuzzer found).
  std::string key_of(const YAML::Node& key) const {
    LATHE_CHECK(key.IsScalar(), ConfigError, "{}: a key under '{}' is {}, not a name",
                origin_.where(key, path_), path_.empty() ? "the top level" : path_,
                describe(key));
    return key.Scalar();
  }

 public:
  Section(YAML::Node node, std::string path, const Origin& origin)
      : node_(std::move(node)), path_(std::move(path)), origin_(origin) {
    LATHE_CHECK(!node_.IsDefined() || node_.IsNull() || node_.IsMap(), ConfigError,
                "{}: '{}' must be a mapping of keys, got {}", origin_.where(node_, path_), path_,
                describe(node_));
  }

  template <class T>
  void optional(const std::string& key, T& field) {
    known_.push_back(key);
    const YAML::Node v = value(key);
    if (!v.IsDefined()) return;
    const std::string w = origin_.where(v, dotted(key));
    origin_.read[dotted(key)] = w;
    convert(v, w, dotted(key), field);
  }

  template <class T>
  void required(const std::string& key, T& field) {
    known_.push_back(key);
    const YAML::Node v = value(key);
    LATHE_CHECK(v.IsDefined() && !v.IsNull(), ConfigError,
                "{}: missing required key '{}' (add it to the file or pass {}=...)",
                origin_.where(node_, path_), dotted(key), dotted(key));
    convert(v, origin_.where(v, dotted(key)), dotted(key), field);
  }

  /// Where `key` of this section was set ("file:line" or the override).
  std::string where_of(const std::string& key) const { return origin_.where(value(key), dotted(key)); }

  /// The sub-mapping under `key` (marked as read).
  Section child(const std::string& key) {
    known_.push_back(key);
    const YAML::Node v = value(key);  // an absent section reads as an empty one
    return Section(v.IsDefined() ? v : YAML::Node(YAML::NodeType::Null), dotted(key), origin_);
  }

  /// Every key not read above goes into `params` (for options a component reads itself).
  void rest_into(Params& params) {
    if (!node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = key_of(kv.first);
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      ParamValue pv;
      pv.where = origin_.where(kv.second, dotted(key));
      if (kv.second.IsSequence()) {
        pv.is_list = true;
        for (const auto& item : kv.second)
          pv.items.push_back(scalar_of(item, pv.where, dotted(key), "a list of scalars"));
      } else {
        pv.items.push_back(scalar_of(kv.second, pv.where, dotted(key), "a scalar or a list"));
      }
      params.set(key, std::move(pv));
    }
    known_.clear();
    for (const auto& kv : node_) known_.push_back(key_of(kv.first));
  }

  void finish() const {
    if (!node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = key_of(kv.first);
      if (std::find(known_.begin(), known_.end(), key) != known_.end()) continue;
      const std::string hint = closest_key(key, known_);
      std::string allowed;
      for (const auto& k : known_) allowed += (allowed.empty() ? "" : ", ") + k;
      throw ConfigError(fmt::format(
          "{}: unknown key '{}'{}; known keys{}: {}", origin_.where(kv.first, dotted(key)),
          dotted(key), hint.empty() ? "" : fmt::format(" (did you mean '{}'?)", dotted(hint)),
          path_.empty() ? "" : fmt::format(" under '{}'", path_), allowed));
    }
  }

 private:
  YAML::Node value(const std::string& key) const {
    if (!node_.IsMap()) return YAML::Node(YAML::NodeType::Undefined);
    const YAML::Node& const_node = node_;  // const lookup: never inserts
    return const_node[key];
  }
  std::string dotted(const std::string& key) const {
    return path_.empty() ? key : path_ + "." + key;
  }

  YAML::Node node_;
  std::string path_;
  const Origin& origin_;
  std::vector<std::string> known_;
};

void apply_override(YAML::Node& root, const std::string& text, Origin& origin) {
  const auto eq = text.find('=');
  LATHE_CHECK(eq != std::string::npos && eq > 0, ConfigError,
              "bad override '{}': expected key=value, e.g. trainer.max_epochs=3", text);
  const std::string key = text.substr(0, eq);
  const std::string raw = text.substr(eq + 1);
  LATHE_CHECK(!raw.empty(), ConfigError,
              "bad override '{}': no value after '=' (write {}=VALUE)", text, key);
  std::vector<std::string> parts;
  std::stringstream ss(key);
  for (std::string part; std::getline(ss, part, '.');) {
    LATHE_CHECK(!part.empty(), ConfigError,
                "bad override '{}': empty name in key '{}' (keys look like section.key)", text, key);
    parts.push_back(part);
  }
  YAML::Node value;
  try {
    value = YAML::Load(raw);
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("bad override '{}': value is not valid YAML: {}", text, e.msg));
  }
  YAML::Node cur = root;
  std::string dotted;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    dotted += (i ? "." : "") + parts[i];
    LATHE_CHECK(cur.IsMap() || cur.IsNull(), ConfigError,
                "bad override '{}': '{}' is a value, not a section", text, dotted);
    if (!cur[parts[i]] || cur[parts[i]].IsNull()) cur[parts[i]] = YAML::Node(YAML::NodeType::Map);
    YAML::Node next = cur[parts[i]];
    cur.reset(next);
  }
  LATHE_CHECK(cur.IsMap() || cur.IsNull(), ConfigError,
              "bad override '{}': '{}' is a value, not a section", text, dotted);
  cur[parts.back()] = value;
  origin.overrides[key] = fmt::format("override '{}'", text);
}

template <class V, class S>
void visit_model_common(V& v, S& s) {
  v("pretrained", s.pretrained);
  v("pretrained_strict", s.pretrained_strict);
  v("remap", s.remap);
  v("freeze", s.freeze);
  v("unfreeze_at_epoch", s.unfreeze_at_epoch);
  v("head", s.head);
  v("backbone_lr_scale", s.backbone_lr_scale);
  v.section("lora", s.lora);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, LoraSection> {
  v("targets", s.targets);
  v("target_regex", s.target_regex);
  v("rank", s.rank);
  v("alpha", s.alpha);
  v("dropout", s.dropout);
  v("adapter", s.adapter);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, CheckpointSection> {
  v("every_n_steps", s.every_n_steps);
  v("every_n_epochs", s.every_n_epochs);
  v("keep_last", s.keep_last);
  v("monitor", s.monitor);
  v("mode", s.mode);
  v("save_best", s.save_best);
  v("async", s.async);
}

struct Reader;
void read_model(Section& model, ModelSection& out);

// ---- the fields of each section, listed once: read by Reader, written by Writer ----------------
// visit(v, section) calls v(key, field) for each scalar or list field and
// v.section(key, sub, visit) for nested sections; `required` marks fields without a default.

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, RunSection> {
  v("name", s.name);
  v("dir", s.dir);
  v("seed", s.seed);
  v("device", s.device);
  v("threads", s.threads);
  v("deterministic", s.deterministic);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, DataSection> {
  v("source", s.source);
  v.required("path", s.path);
  v("test_path", s.test_path);
  v("val_fraction", s.val_fraction);
  v("test_fraction", s.test_fraction);
  v("batch_size", s.batch_size);
  v("eval_batch_size", s.eval_batch_size);
  v("limit_train", s.limit_train);
  v("limit_test", s.limit_test);
  v("classes", s.classes);
  v("mean", s.mean);
  v("std", s.std);
  v("num_workers", s.num_workers);
  v("skip_bad_records", s.skip_bad_records);
  v("target", s.target);
  v("task", s.task);
  v("impute", s.impute);
  v("outliers", s.outliers);
  v("scale", s.scale);
  v("encode", s.encode);
  v("columns", s.columns);
  v("image_size", s.image_size);
  v("max_image_pixels", s.max_image_pixels);
  v("augment", s.augment);
  v("seq_len", s.seq_len);
  v("tokenizer", s.tokenizer);
  v("vocab", s.vocab);
  v("max_length", s.max_length);
  v("text_column", s.text_column);
  v("invalid_utf8", s.invalid_utf8);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, TaskSection> {
  v("kind", s.kind);
  v("loss", s.loss);
  v("label_smoothing", s.label_smoothing);
  v("class_weights", s.class_weights);
  v("huber_delta", s.huber_delta);
  v("top_k", s.top_k);
  v("ignore_index", s.ignore_index);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, ScheduleSection> {
  v("name", s.name);
  v("interval", s.interval);
  v("warmup_steps", s.warmup_steps);
  v("warmup_fraction", s.warmup_fraction);
  v("warmup_start_factor", s.warmup_start_factor);
  v("min_ratio", s.min_ratio);
  v("step_size", s.step_size);
  v("gamma", s.gamma);
  v("milestones", s.milestones);
  v("power", s.power);
  v("pct_start", s.pct_start);
  v("div_factor", s.div_factor);
  v("final_div_factor", s.final_div_factor);
  v("decay_fraction", s.decay_fraction);
  v("monitor", s.monitor);
  v("mode", s.mode);
  v("factor", s.factor);
  v("patience", s.patience);
  v("threshold", s.threshold);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, OptimSection> {
  v("name", s.name);
  v("lr", s.lr);
  v("weight_decay", s.weight_decay);
  v("momentum", s.momentum);
  v("nesterov", s.nesterov);
  v("betas", s.betas);
  v("eps", s.eps);
  v("alpha", s.alpha);
  v("fused", s.fused);
  v("layer_decay", s.layer_decay);
  v.section("schedule", s.schedule);
  v.section("momentum_schedule", s.momentum_schedule);
  v.section("weight_decay_schedule", s.weight_decay_schedule);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, EarlyStoppingSection> {
  v("monitor", s.monitor);
  v("mode", s.mode);
  v("patience", s.patience);
  v("min_delta", s.min_delta);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, MlflowSection> {
  v("tracking_uri", s.tracking_uri);
  v("experiment", s.experiment);
  v("run_name", s.run_name);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, EmaSection> {
  v("decay", s.decay);
  v("warmup", s.warmup);
  v("warmup_gamma", s.warmup_gamma);
  v("warmup_power", s.warmup_power);
  v("min_decay", s.min_decay);
  v("update_after_step", s.update_after_step);
  v("buffers", s.buffers);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, ProfileSection> {
  v("steps", s.steps);
  v("path", s.path);
  v("rows", s.rows);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, TrainerSection> {
  v("max_epochs", s.max_epochs);
  v("max_steps", s.max_steps);
  v("val_every_n_steps", s.val_every_n_steps);
  v("accumulate_grad_batches", s.accumulate_grad_batches);
  v("gradient_clip_val", s.gradient_clip_val);
  v("gradient_clip_algorithm", s.gradient_clip_algorithm);
  v("precision", s.precision);
  v("channels_last", s.channels_last);
  v("cuda_graphs", s.cuda_graphs);
  v("matmul_precision", s.matmul_precision);
  v("log_every_n_steps", s.log_every_n_steps);
  v("progress", s.progress);
  v("csv", s.csv);
  v("tensorboard", s.tensorboard);
  v.section("early_stopping", s.early_stopping);
  v.section("mlflow", s.mlflow);
  v.section("ema", s.ema);
  v.section("profile", s.profile);
}

template <class V, class S>
void visit(V& v, S& s) requires std::is_same_v<std::remove_const_t<S>, DistSection> {
  v("backend", s.backend);
  v("bucket_mb", s.bucket_mb);
  v("timeout_s", s.timeout_s);
}

/// Reads a section's fields from a Section (see visit).
struct Reader {
  Section& sec;
  template <class T>
  void operator()(const std::string& key, T& field) { sec.optional(key, field); }
  /// A mapping of free keys (data.columns): each key's scalar or list, checked by its user.
  void operator()(const std::string& key, Params& field) {
    Section child = sec.child(key);
    child.rest_into(field);
  }
  template <class T>
  void required(const std::string& key, T& field) { sec.required(key, field); }
  template <class S>
  void section(const std::string& key, S& sub) {
    Section child = sec.child(key);
    Reader r{child};
    visit(r, sub);
    child.finish();
  }
};

template <class S>
void read_section(Section& top, const std::string& key, S& out) {
  Section sec = top.child(key);
  Reader r{sec};
  visit(r, out);
  sec.finish();
}

/// Checks that cannot be expressed by types: ranges and choices, naming the key and its origin.
class Validator {
 public:
  explicit Validator(const Origin& origin) : origin_(origin) {}
  std::string where(const std::string& key) const {
    const auto it = origin_.overrides.find(key);
    return it != origin_.overrides.end() ? it->second : origin_.file;
  }
  void choice(const std::string& key, const std::string& value,
              std::initializer_list<const char*> allowed) const {
    std::string list;
    for (const char* a : allowed) {
      if (value == a) return;
      list += (list.empty() ? "" : ", ") + std::string(a);
    }
    throw ConfigError(fmt::format("{}: {} = '{}' must be one of {}", where(key), key, value, list));
  }
  template <class T>
  void at_least(const std::string& key, T value, T low) const {
    LATHE_CHECK(value >= low, ConfigError, "{}: {} = {} must be at least {}", where(key), key,
                value, low);
  }
  /// Where `key` was set: file:line, the override, or the file.
  std::string where_set(const std::string& key) const {
    const auto it = origin_.read.find(key);
    return it != origin_.read.end() ? it->second : where(key);
  }
  void fraction(const std::string& key, double value) const {
    LATHE_CHECK(value >= 0 && value < 1, ConfigError, "{}: {} = {} must be in [0, 1)", where(key),
                key, value);
  }

 private:
  const Origin& origin_;
};

void validate_schedule(const Validator& v, const std::string& key, const ScheduleSection& s,
                       bool may_be_none) {
  if (may_be_none && s.name == "none") return;
  schedule_spec(s.name, v.where(key + ".name"), key + ".name");  // the one table of names
  LATHE_CHECK(s.name != "none" || may_be_none, ConfigError,
              "{}: {}.name = 'none' is only for momentum_schedule and weight_decay_schedule",
              v.where(key + ".name"), key);
  v.choice(key + ".interval", s.interval, {"step", "epoch"});
  v.choice(key + ".mode", s.mode, {"auto", "min", "max"});
  v.fraction(key + ".warmup_fraction", s.warmup_fraction);
  v.at_least<int64_t>(key + ".warmup_steps", s.warmup_steps, 0);
  v.at_least<int64_t>(key + ".step_size", s.step_size, 1);
  v.fraction(key + ".decay_fraction", s.decay_fraction);
  LATHE_CHECK(s.pct_start > 0 && s.pct_start < 1, ConfigError, "{}: {}.pct_start = {} must be in (0, 1)",
              v.where(key + ".pct_start"), key, s.pct_start);
  LATHE_CHECK(s.factor > 0 && s.factor < 1, ConfigError, "{}: {}.factor = {} must be in (0, 1)",
              v.where(key + ".factor"), key, s.factor);
  for (size_t i = 1; i < s.milestones.size(); ++i)
    LATHE_CHECK(s.milestones[i] > s.milestones[i - 1], ConfigError,
                "{}: {}.milestones must increase, got {} after {}", v.where(key + ".milestones"),
                key, s.milestones[i], s.milestones[i - 1]);
}

/// Every data.* key as text, to see which differ from the defaults.
struct Flatten {
  std::map<std::string, std::string>& out;
  template <class T>
  void operator()(const std::string& key, const T& v) { out[key] = fmt::format("{}", v); }
  template <class T>
  void operator()(const std::string& key, const std::vector<T>& v) {
    out[key] = fmt::format("[{}]", fmt::join(v, ", "));
  }
  void operator()(const std::string& key, const Params& p) {
    out[key] = p.values().empty() ? "" : "set";
  }
  template <class T>
  void required(const std::string& key, const T& v) { (*this)(key, v); }
};

/// data.source is a known source, and every data.* key set away from its default is one that
/// source honours (config/names.h); data.augment items are known augmentations.
void validate_source_keys(const Validator& v, const DataSection& d) {
  const SourceSpec& src = source_spec(d.source, v.where_set("data.source"));
  std::map<std::string, std::string> given, defaults;
  Flatten fg{given}, fd{defaults};
  visit(fg, d);
  DataSection fresh;
  visit(fd, fresh);
  for (const auto& entry : given) {
    const std::string& key = entry.first;  // a plain reference: clang 14 cannot capture bindings
    if (entry.second == defaults[key]) continue;
    const auto applies = [&](const std::vector<std::string_view>& keys) {
      return std::find(keys.begin(), keys.end(), key) != keys.end();
    };
    if (applies(common_data_keys()) || applies(src.keys)) continue;
    std::vector<std::string> users;
    for (const auto& s : sources())
      if (applies(s.keys)) users.emplace_back(s.name);
    throw ConfigError(fmt::format(
        "{}: data.{} does not apply to source {} ({}); remove it. It applies to: {}; source {} "
        "also takes: {}",
        v.where_set("data." + key), key, src.name, src.description, fmt::join(users, ", "),
        src.name, fmt::join(src.keys, ", ")));
  }
  for (const auto& item : d.augment) parse_augment_item(item, v.where_set("data.augment"));
}

/// data.task and task.kind are one answer: the source's own task (idx, image_folder, text_csv:
/// classification; text: lm) or, for csv, data.task and task.kind, whichever is set (both: they
/// must agree); csv with both auto leaves it to the target column.
void resolve_task(RunConfig& c, const Validator& v) {
  const SourceSpec& src = source_spec(c.data.source);
  std::string& kind = c.task.kind;
  std::string& dtask = c.data.task;
  LATHE_CHECK(kind == "auto" || dtask == "auto" || kind == dtask, ConfigError,
              "{}: task.kind = {}, but data.task = {} ({}); they are one answer: set one of them "
              "or make them agree",
              v.where_set("task.kind"), kind, dtask, v.where_set("data.task"));
  if (!src.task.empty()) {
    for (const auto& [key, value] : {std::pair{"data.task", dtask}, std::pair{"task.kind", kind}})
      LATHE_CHECK(value == "auto" || value == src.task, ConfigError,
                  "{}: {} = {}, but source {} gives {} data; remove {} or change data.source",
                  v.where_set(key), key, value, src.name, src.task, key);
    kind = std::string(src.task);
    if (src.kind == SourceKind::text_csv) dtask = kind;
    return;
  }
  LATHE_CHECK(kind != "lm", ConfigError,
              "{}: task.kind = lm, but source {} gives classification or regression data (language "
              "models read source text)",
              v.where_set("task.kind"), src.name);
  if (dtask == "auto")
    dtask = kind;  // may stay auto: the target column decides when the data is read
  else
    kind = dtask;
}

/// resolve_task, then the loss against the kind it settled on (when it did).
void resolve_and_check_task(RunConfig& c, const Validator& v) {
  resolve_task(c, v);
  if (c.task.kind != "auto")
    loss_spec(task_spec(c.task.kind, v.where_set("task.kind")), c.task.loss,
              v.where_set("task.loss"));
}

void validate(const RunConfig& c, const Origin& origin) {
  const Validator v(origin);
  v.fraction("data.val_fraction", c.data.val_fraction);
  validate_source_keys(v, c.data);
  LATHE_CHECK(c.data.test_fraction >= 0 && c.data.val_fraction + c.data.test_fraction < 1,
              ConfigError, "{}: data.val_fraction + data.test_fraction = {} must be below 1",
              v.where("data.test_fraction"), c.data.val_fraction + c.data.test_fraction);
  v.at_least("data.num_workers", c.data.num_workers, -1);
  v.choice("data.task", c.data.task, {"auto", "classification", "regression"});
  v.choice("data.invalid_utf8", c.data.invalid_utf8, {"error", "replace"});
  v.at_least<int64_t>("data.seq_len", c.data.seq_len, 1);
  v.at_least<int64_t>("data.max_image_pixels", c.data.max_image_pixels, 1);
  LATHE_CHECK(c.data.image_size >= 0 && c.data.image_size <= 8192, ConfigError,
              "{}: data.image_size = {} must be in [0, 8192] (0: the source's own size)",
              v.where("data.image_size"), c.data.image_size);
  v.at_least<int64_t>("data.max_length", c.data.max_length, 2);
  v.at_least<int64_t>("data.batch_size", c.data.batch_size, 1);
  v.at_least<int64_t>("data.eval_batch_size", c.data.eval_batch_size, 1);
  LATHE_CHECK(c.data.mean.size() == c.data.std.size(), ConfigError,
              "{}: data.mean has {} values but data.std has {}; give both per channel or neither",
              v.where("data.mean"), c.data.mean.size(), c.data.std.size());
  std::map<int64_t, size_t> class_pos;
  for (size_t i = 0; i < c.data.classes.size(); ++i) {
    LATHE_CHECK(c.data.classes[i] >= 0, ConfigError,
                "{}: data.classes holds {}; class ids are non-negative", v.where("data.classes"),
                c.data.classes[i]);
    const auto [it, fresh] = class_pos.emplace(c.data.classes[i], i);
    LATHE_CHECK(fresh, ConfigError,
                "{}: data.classes lists class {} twice (positions {} and {}); each class once",
                v.where("data.classes"), c.data.classes[i], it->second, i);
  }
  for (double s : c.data.std)
    LATHE_CHECK(s > 0, ConfigError, "{}: data.std values must be positive, got {}",
                v.where("data.std"), s);

  if (c.task.kind != "auto") {
    loss_spec(task_spec(c.task.kind, v.where_set("task.kind")), c.task.loss,
              v.where_set("task.loss"));
  } else if (!c.task.loss.empty()) {  // the data picks the kind: the loss must fit one of them
    bool known = false;
    std::vector<std::string> all;
    for (const auto& t : tasks())
      for (const auto& l : t.losses) {
        known = known || l.name == c.task.loss;
        all.push_back(fmt::format("{} ({})", l.name, t.name));
      }
    LATHE_CHECK(known, ConfigError, "{}: task.loss = '{}' must be one of {}",
                v.where_set("task.loss"), c.task.loss, fmt::join(all, ", "));
  }
  LATHE_CHECK(c.task.label_smoothing >= 0 && c.task.label_smoothing < 1, ConfigError,
              "{}: task.label_smoothing = {} must be in [0, 1)", v.where("task.label_smoothing"),
              c.task.label_smoothing);
  v.at_least<int64_t>("task.top_k", c.task.top_k, 1);

  optimizer_spec(c.optim.name, v.where("optim.name"));  // the one table of optimizers
  v.choice("optim.fused", c.optim.fused, {"auto", "true", "false"});
  LATHE_CHECK(c.optim.lr > 0, ConfigError, "{}: optim.lr = {} must be positive",
              v.where("optim.lr"), c.optim.lr);
  LATHE_CHECK(c.optim.betas.size() == 2, ConfigError,
              "{}: optim.betas needs two values [beta1, beta2], got {}", v.where("optim.betas"),
              c.optim.betas.size());
  v.at_least("optim.weight_decay", c.optim.weight_decay, 0.0);
  LATHE_CHECK(c.optim.layer_decay > 0 && c.optim.layer_decay <= 1, ConfigError,
              "{}: optim.layer_decay = {} must be in (0, 1] (1: every layer at optim.lr)",
              v.where_set("optim.layer_decay"), c.optim.layer_decay);
  validate_schedule(v, "optim.schedule", c.optim.schedule, false);
  validate_schedule(v, "optim.momentum_schedule", c.optim.momentum_schedule, true);
  validate_schedule(v, "optim.weight_decay_schedule", c.optim.weight_decay_schedule, true);

  const auto& t = c.trainer;
  v.at_least<int64_t>("trainer.max_epochs", t.max_epochs, 1);
  v.at_least<int64_t>("trainer.max_steps", t.max_steps, 0);
  v.at_least<int64_t>("trainer.val_every_n_steps", t.val_every_n_steps, 0);
  v.at_least<int64_t>("trainer.accumulate_grad_batches", t.accumulate_grad_batches, 1);
  v.at_least("trainer.gradient_clip_val", t.gradient_clip_val, 0.0);
  v.choice("trainer.gradient_clip_algorithm", t.gradient_clip_algorithm, {"norm", "value"});
  v.choice("trainer.precision", t.precision, {"auto", "32", "bf16", "fp16"});
  v.choice("trainer.channels_last", t.channels_last, {"auto", "true", "false"});
  v.choice("trainer.matmul_precision", t.matmul_precision, {"auto", "highest", "high", "medium"});
  v.at_least<int64_t>("trainer.log_every_n_steps", t.log_every_n_steps, 1);
  v.choice("trainer.progress", t.progress, {"auto", "bar", "plain", "none"});
  v.choice("trainer.early_stopping.mode", t.early_stopping.mode, {"auto", "min", "max"});
  v.at_least<int64_t>("trainer.early_stopping.patience", t.early_stopping.patience, 1);
  const std::string& uri = t.mlflow.tracking_uri;
  LATHE_CHECK(uri.empty() || uri.rfind("http://", 0) == 0 || uri.rfind("https://", 0) == 0,
              ConfigError,
              "{}: trainer.mlflow.tracking_uri = {}: lathe talks to an MLflow tracking server "
              "over HTTP; give its address (http://host:5000, as `mlflow server` prints it)",
              v.where("trainer.mlflow.tracking_uri"), uri);
  LATHE_CHECK(uri.empty() || !t.mlflow.experiment.empty(), ConfigError,
              "{}: trainer.mlflow.experiment is empty; name an experiment (e.g. Default)",
              v.where("trainer.mlflow.experiment"));
  LATHE_CHECK(t.ema.decay >= 0 && t.ema.decay < 1 && t.ema.min_decay >= 0 &&
                  t.ema.min_decay <= t.ema.decay && t.ema.warmup_gamma > 0 &&
                  t.ema.warmup_power > 0,
              ConfigError,
              "{}: trainer.ema needs 0 <= min_decay ({}) <= decay ({}) < 1 (decay 0: off) and "
              "positive warmup_gamma ({}) and warmup_power ({})",
              v.where("trainer.ema.decay"), t.ema.min_decay, t.ema.decay, t.ema.warmup_gamma,
              t.ema.warmup_power);
  v.at_least<int64_t>("trainer.ema.update_after_step", t.ema.update_after_step, 0);
  v.choice("trainer.ema.buffers", t.ema.buffers, {"average", "copy"});
  // A monitor of the EMA weights' metrics needs them.
  const std::vector<std::pair<std::string, std::string>> monitors{
      {"checkpoint.monitor", c.checkpoint.monitor},
      {"trainer.early_stopping.monitor", t.early_stopping.monitor},
      {"optim.schedule.monitor", c.optim.schedule.monitor}};
  for (const auto& [key, monitor] : monitors)
    LATHE_CHECK(t.ema.enabled() || monitor.rfind("val_ema/", 0) != 0, ConfigError,
                "{}: {} = {} watches the EMA weights, but trainer.ema is off; set "
                "trainer.ema.decay (e.g. 0.999) or monitor val/...",
                v.where(key), key, monitor);
  const auto& steps = t.profile.steps;
  LATHE_CHECK(steps.empty() || (steps.size() == 2 && steps[0] >= 1 && steps[0] <= steps[1]),
              ConfigError,
              "{}: trainer.profile.steps = [{}] must be [first, last] optimizer steps with "
              "1 <= first <= last, e.g. [6, 10] (after a few warm-up steps)",
              v.where("trainer.profile.steps"), fmt::join(steps, ", "));
  v.at_least<int64_t>("trainer.profile.rows", t.profile.rows, 1);

  v.at_least<int64_t>("checkpoint.every_n_steps", c.checkpoint.every_n_steps, 0);
  v.at_least<int64_t>("checkpoint.every_n_epochs", c.checkpoint.every_n_epochs, 0);
  v.at_least<int64_t>("checkpoint.keep_last", c.checkpoint.keep_last, 1);
  if (!c.checkpoint.mode.empty()) v.choice("checkpoint.mode", c.checkpoint.mode, {"min", "max"});
  v.choice("dist.backend", c.dist.backend, {"auto", "gloo", "nccl"});
  LATHE_CHECK(c.dist.bucket_mb > 0 && c.dist.timeout_s > 0, ConfigError,
              "{}: dist.bucket_mb ({}) and dist.timeout_s ({}) must be positive",
              v.where("dist.bucket_mb"), c.dist.bucket_mb, c.dist.timeout_s);
  v.at_least<int64_t>("model.unfreeze_at_epoch", c.model.unfreeze_at_epoch, 0);
  LATHE_CHECK(c.model.backbone_lr_scale >= 0, ConfigError,
              "{}: model.backbone_lr_scale = {} must be >= 0", v.where("model.backbone_lr_scale"),
              c.model.backbone_lr_scale);
  const auto& lora = c.model.lora;
  v.at_least<int64_t>("model.lora.rank", lora.rank, 0);
  v.at_least("model.lora.alpha", lora.alpha, 0.0);
  v.fraction("model.lora.dropout", lora.dropout);
  LATHE_CHECK(lora.targets.empty() || lora.target_regex.empty(), ConfigError,
              "{}: model.lora has both targets and target_regex; give one (names, or one regular "
              "expression a whole module path matches)",
              v.where_set("model.lora.target_regex"));
  LATHE_CHECK(lora.enabled() || (lora.rank == 0 && lora.alpha == 0 && lora.dropout == 0),
              ConfigError,
              "{}: model.lora sets rank, alpha or dropout but no targets, target_regex or adapter; "
              "say which layers to adapt (e.g. model.lora.targets=[query,value])",
              v.where_set("model.lora.rank"));
  for (const auto& rule : c.model.remap)
    LATHE_CHECK(rule.find('=') != std::string::npos, ConfigError,
                "{}: model.remap rule '{}' must be old_prefix=new_prefix (e.g. 'backbone.=')",
                v.where("model.remap"), rule);
  LATHE_CHECK(!c.run.name.empty() && c.run.name.find('/') == std::string::npos, ConfigError,
              "{}: run.name = '{}' must be a non-empty folder name without '/'",
              v.where("run.name"), c.run.name);
}

void read_model(Section& model, ModelSection& out) {
  model.required("name", out.name);
  out.name_where = model.where_of("name");
  Reader r{model};
  visit_model_common(r, out);
  model.rest_into(out.params);
  model.finish();
}

/// The line where a second YAML document starts (a `---` after content or after another `---`,
/// or content after a `...` end marker), or 0. A scan of the text: markers sit at column 0.
int64_t second_document_line(std::string_view yaml) {
  bool started = false, ended = false;
  int64_t line_no = 0;
  for (size_t pos = 0; pos < yaml.size();) {
    const size_t eol = std::min(yaml.find('\n', pos), yaml.size());
    std::string_view line = yaml.substr(pos, eol - pos);
    pos = eol + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    const auto marker = [&](std::string_view m) {
      return line.substr(0, 3) == m && (line.size() == 3 || line[3] == ' ' || line[3] == '\t');
    };
    const size_t first = line.find_first_not_of(" \t");
    const bool blank = first == std::string_view::npos || line[first] == '#';
    if (marker("---")) {
      if (started || ended) return line_no;
      started = true;
    } else if (marker("...")) {
      ended = true;
    } else if (!blank && line[0] != '%') {
      if (ended) return line_no;
      started = true;
    }
  }
  return 0;
}

/// A key written twice in one mapping is an error naming both lines (yaml-cpp would keep the
/// first silently, Python's YAML the last). Walks the tree without recursion.
void reject_duplicate_keys(const YAML::Node& root, const std::string& file) {
  std::vector<std::pair<YAML::Node, std::string>> pending{{root, ""}};
  while (!pending.empty()) {
    const auto [node, path] = pending.back();
    pending.pop_back();
    if (node.IsSequence()) {
      for (const auto& item : node) pending.emplace_back(item, path);
    } else if (node.IsMap()) {
      std::map<std::string, int> seen;  // key -> line
      for (const auto& kv : node) {
        const std::string key = kv.first.IsScalar() ? kv.first.Scalar() : "(a non-scalar key)";
        const std::string dotted = path.empty() ? key : path + "." + key;
        const int line = kv.first.Mark().is_null() ? 0 : kv.first.Mark().line + 1;
        const auto [it, fresh] = seen.emplace(key, line);
        LATHE_CHECK(fresh, ConfigError,
                    "{}:{}: key '{}' appears twice in one mapping (first on line {}); keep one",
                    file, line, dotted, it->second);
        pending.emplace_back(kv.second, dotted);
      }
    }
  }
}

RunConfig from_tree(YAML::Node root, Origin& origin, const std::vector<std::string>& overrides) {
  LATHE_CHECK(root.IsMap() || root.IsNull(), ConfigError,
              "{}: a run config is a mapping of sections (run, data, model, task, optim, "
              "trainer), got {}",
              origin.file, describe(root));
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  for (const auto& o : overrides) apply_override(root, o, origin);

  RunConfig cfg;
  cfg.source = origin.file;
  Section top(root, "", origin);
  read_section(top, "run", cfg.run);
  read_section(top, "data", cfg.data);
  Section model = top.child("model");
  read_model(model, cfg.model);
  read_section(top, "task", cfg.task);
  read_section(top, "optim", cfg.optim);
  read_section(top, "trainer", cfg.trainer);
  read_section(top, "checkpoint", cfg.checkpoint);
  read_section(top, "dist", cfg.dist);
  top.finish();
  validate(cfg, origin);
  resolve_and_check_task(cfg, Validator(origin));
  return cfg;
}

}  // namespace

RunConfig parse_config(std::string_view yaml, std::string_view origin_name,
                       const std::vector<std::string>& overrides) {
  Origin origin{std::string(origin_name), {}, {}};
  const int64_t second = second_document_line(yaml);
  LATHE_CHECK(second == 0, ConfigError,
              "{}:{}: a second YAML document ('---'); a run config is one document: remove it or "
              "put it in its own file",
              origin.file, second);
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));  // not LoadAll: yaml-cpp 0.7's hangs on `,"`
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}:{}: not valid YAML: {}", origin.file, e.mark.line + 1,
                                  e.mark.column + 1, e.msg));
  }
  reject_duplicate_keys(root, origin.file);
  return from_tree(root, origin, overrides);
}

RunConfig load_config(const std::filesystem::path& file,
                      const std::vector<std::string>& overrides) {
  const std::string why = not_a_regular_file(file);
  LATHE_CHECK(why.empty(), ConfigError, "{}: cannot open the config file ({})", file.string(), why);
  std::ifstream in(file, std::ios::binary);
  LATHE_CHECK(in.good(), ConfigError, "{}: cannot open the config file (not readable)",
              file.string());
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_config(buf.str(), file.string(), overrides);
}

ModelSection parse_model_section(const std::string& name,
                                 const std::vector<std::string>& options) {
  Origin origin{"command line", {}, {}};
  YAML::Node root(YAML::NodeType::Map);
  root["name"] = name;
  for (const auto& o : options) apply_override(root, o, origin);
  ModelSection out;
  Section model(root, "model", origin);
  read_model(model, out);
  return out;
}

namespace {

/// Writes a section's fields as YAML (see visit); doubles in shortest round-trip form.
struct Writer {
  YAML::Emitter& out;
  void operator()(const std::string& key, const std::string& v) { out << YAML::Key << key << YAML::Value << v; }
  void operator()(const std::string& key, bool v) { out << YAML::Key << key << YAML::Value << v; }
  void operator()(const std::string& key, double v) {
    out << YAML::Key << key << YAML::Value << fmt::format("{}", v);
  }
  template <class T>
  void operator()(const std::string& key, const T& v) requires std::is_integral_v<T> {
    out << YAML::Key << key << YAML::Value << v;
  }
  template <class T>
  void operator()(const std::string& key, const std::vector<T>& v) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& x : v) {
      if constexpr (std::is_same_v<T, std::string>) out << x;
      else out << fmt::format("{}", x);
    }
    out << YAML::EndSeq;
  }
  void operator()(const std::string& key, const Params& p) {
    out << YAML::Key << key << YAML::Value << YAML::BeginMap;
    for (const auto& [name, v] : p.values()) (*this)(name, v.items);
    out << YAML::EndMap;
  }
  template <class T>
  void required(const std::string& key, const T& v) { (*this)(key, v); }
  template <class S>
  void section(const std::string& key, const S& sub) {
    out << YAML::Key << key << YAML::Value << YAML::BeginMap;
    visit(*this, sub);
    out << YAML::EndMap;
  }
};

}  // namespace

std::string to_yaml(const RunConfig& c) {
  YAML::Emitter out;
  Writer w{out};
  out << YAML::BeginMap;
  w.section("run", c.run);
  w.section("data", c.data);
  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.model.name;
  visit_model_common(w, c.model);
  for (const auto& [key, v] : c.model.params.values()) {
    out << YAML::Key << key << YAML::Value;
    if (v.is_list) {
      out << YAML::Flow << YAML::BeginSeq;
      for (const auto& item : v.items) out << item;
      out << YAML::EndSeq;
    } else {
      out << v.items.front();
    }
  }
  out << YAML::EndMap;
  w.section("task", c.task);
  w.section("optim", c.optim);
  w.section("trainer", c.trainer);
  w.section("checkpoint", c.checkpoint);
  w.section("dist", c.dist);
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

namespace {

/// Lists a section's fields as ConfigKeys (see visit): type names and defaults as YAML text.
struct Describer {
  std::vector<ConfigKey>& out;
  std::string prefix;

  static std::string text(const std::string& v) { return v.empty() ? "\"\"" : v; }
  static std::string text(bool v) { return v ? "true" : "false"; }
  template <class T>
  static std::string text(const T& v) { return fmt::format("{}", v); }
  template <class T>
  static std::string text(const std::vector<T>& v) { return fmt::format("[{}]", fmt::join(v, ", ")); }
  static std::string text(const Params&) { return "{}"; }

  template <class T>
  static std::string type() {
    if constexpr (std::is_same_v<T, std::string>) return "string";
    else if constexpr (std::is_same_v<T, bool>) return "boolean";
    else if constexpr (std::is_floating_point_v<T>) return "number";
    else if constexpr (std::is_integral_v<T>) return "integer";
    else if constexpr (std::is_same_v<T, Params>) return "mapping";
    else return "list of " + type<typename T::value_type>() + "s";
  }

  template <class T>
  void operator()(const std::string& key, const T& v) { out.push_back({prefix + key, type<T>(), text(v), false}); }
  template <class T>
  void required(const std::string& key, const T&) { out.push_back({prefix + key, type<T>(), "", true}); }
  template <class S>
  void section(const std::string& key, const S& sub) {
    Describer d{out, prefix + key + "."};
    visit(d, sub);
  }
};

}  // namespace

std::vector<ConfigKey> config_keys() {
  const RunConfig defaults;
  std::vector<ConfigKey> out;
  Describer top{out, ""};
  top.section("run", defaults.run);
  top.section("data", defaults.data);
  Describer model{out, "model."};
  model.required("name", defaults.model.name);
  visit_model_common(model, defaults.model);
  top.section("task", defaults.task);
  top.section("optim", defaults.optim);
  top.section("trainer", defaults.trainer);
  top.section("checkpoint", defaults.checkpoint);
  top.section("dist", defaults.dist);
  return out;
}

}  // namespace lathe::config
