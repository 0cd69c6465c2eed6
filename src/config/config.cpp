// YAML → RunConfig: overrides, typed reads with file:line:key errors, and the resolved YAML back.
#include "lathe/config/config.h"

#include <fstream>
#include <map>
#include <sstream>

#include <yaml-cpp/yaml.h>

#include "lathe/core/error.h"

namespace lathe::config {
namespace {

/// What every reader needs to say where a value came from.
struct Origin {
  std::string file;
  std::map<std::string, std::string> overrides;  ///< dotted key → "override 'k=v'"

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
             std::vector<std::string>& out) {
  LATHE_CHECK(n.IsSequence(), ConfigError, "{}: key '{}' expects a list of strings, got {}", w, k,
              describe(n));
  out.clear();
  for (const auto& item : n) out.push_back(scalar_of(item, w, k, "a string"));
}
void convert(const YAML::Node& n, const std::string& w, const std::string& k,
             std::vector<double>& out) {
  LATHE_CHECK(n.IsSequence(), ConfigError, "{}: key '{}' expects a list of numbers, got {}", w, k,
              describe(n));
  out.clear();
  for (const auto& item : n) out.push_back(parse_double(scalar_of(item, w, k, "a number"), w, k));
}

/// Reads the keys of one mapping into struct fields; `finish` rejects the keys nobody read.
class Section {
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
    if (v.IsDefined()) convert(v, origin_.where(v, dotted(key)), dotted(key), field);
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
      const std::string key = kv.first.as<std::string>();
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
    for (const auto& kv : node_) known_.push_back(kv.first.as<std::string>());
  }

  void finish() const {
    if (!node_.IsMap()) return;
    for (const auto& kv : node_) {
      const std::string key = kv.first.as<std::string>();
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

void read_model(Section& model, ModelSection& out) {
  model.required("name", out.name);
  out.name_where = model.where_of("name");
  model.rest_into(out.params);
  model.finish();
}

RunConfig from_tree(YAML::Node root, Origin& origin, const std::vector<std::string>& overrides) {
  LATHE_CHECK(root.IsMap() || root.IsNull(), ConfigError,
              "{}: a run config is a mapping of sections (run, data, model, optim, trainer), "
              "got {}",
              origin.file, describe(root));
  if (root.IsNull()) root = YAML::Node(YAML::NodeType::Map);
  for (const auto& o : overrides) apply_override(root, o, origin);

  RunConfig cfg;
  cfg.source = origin.file;
  Section top(root, "", origin);

  Section run = top.child("run");
  run.optional("name", cfg.run.name);
  run.optional("dir", cfg.run.dir);
  run.optional("seed", cfg.run.seed);
  run.optional("device", cfg.run.device);
  run.optional("threads", cfg.run.threads);
  run.optional("deterministic", cfg.run.deterministic);
  run.finish();

  Section data = top.child("data");
  data.optional("source", cfg.data.source);
  data.required("path", cfg.data.path);
  data.optional("test_path", cfg.data.test_path);
  data.optional("val_fraction", cfg.data.val_fraction);
  data.optional("test_fraction", cfg.data.test_fraction);
  data.optional("batch_size", cfg.data.batch_size);
  data.optional("eval_batch_size", cfg.data.eval_batch_size);
  data.optional("limit_train", cfg.data.limit_train);
  data.optional("limit_test", cfg.data.limit_test);
  data.optional("mean", cfg.data.mean);
  data.optional("std", cfg.data.std);
  data.optional("num_workers", cfg.data.num_workers);
  data.optional("skip_bad_records", cfg.data.skip_bad_records);
  data.optional("target", cfg.data.target);
  data.optional("task", cfg.data.task);
  data.optional("impute", cfg.data.impute);
  data.optional("outliers", cfg.data.outliers);
  data.optional("scale", cfg.data.scale);
  data.optional("encode", cfg.data.encode);
  Section columns = data.child("columns");
  columns.rest_into(cfg.data.columns);
  data.optional("image_size", cfg.data.image_size);
  data.optional("augment", cfg.data.augment);
  data.optional("seq_len", cfg.data.seq_len);
  data.optional("vocab", cfg.data.vocab);
  data.optional("max_length", cfg.data.max_length);
  data.optional("text_column", cfg.data.text_column);
  data.finish();

  Section model = top.child("model");
  read_model(model, cfg.model);

  Section optim = top.child("optim");
  optim.optional("name", cfg.optim.name);
  optim.optional("lr", cfg.optim.lr);
  optim.optional("weight_decay", cfg.optim.weight_decay);
  optim.optional("momentum", cfg.optim.momentum);
  optim.optional("nesterov", cfg.optim.nesterov);
  optim.optional("betas", cfg.optim.betas);
  optim.optional("schedule", cfg.optim.schedule);
  optim.optional("warmup_fraction", cfg.optim.warmup_fraction);
  optim.optional("min_lr_ratio", cfg.optim.min_lr_ratio);
  optim.finish();

  Section trainer = top.child("trainer");
  trainer.optional("max_epochs", cfg.trainer.max_epochs);
  trainer.optional("log_every_n_steps", cfg.trainer.log_every_n_steps);
  trainer.optional("progress", cfg.trainer.progress);
  trainer.finish();

  top.finish();

  // Values that parse but make no sense: say which key and what range is allowed.
  const auto where = [&](const std::string& key) {
    const auto it = origin.overrides.find(key);
    return it != origin.overrides.end() ? it->second : origin.file;
  };
  LATHE_CHECK(cfg.data.val_fraction >= 0 && cfg.data.val_fraction < 1, ConfigError,
              "{}: data.val_fraction = {} must be in [0, 1)", where("data.val_fraction"),
              cfg.data.val_fraction);
  const auto& src = cfg.data.source;
  LATHE_CHECK(src == "idx" || src == "csv" || src == "image_folder" || src == "text" ||
                  src == "text_csv",
              ConfigError, "{}: data.source = '{}' must be one of idx, csv, image_folder, text, "
              "text_csv", where("data.source"), src);
  LATHE_CHECK(cfg.data.test_fraction >= 0 && cfg.data.val_fraction + cfg.data.test_fraction < 1,
              ConfigError, "{}: data.val_fraction + data.test_fraction = {} must be below 1",
              where("data.test_fraction"), cfg.data.val_fraction + cfg.data.test_fraction);
  LATHE_CHECK(cfg.data.num_workers >= -1, ConfigError,
              "{}: data.num_workers = {} must be -1 (default), 0 (inline) or positive",
              where("data.num_workers"), cfg.data.num_workers);
  LATHE_CHECK(cfg.data.batch_size > 0, ConfigError, "{}: data.batch_size = {} must be positive",
              where("data.batch_size"), cfg.data.batch_size);
  LATHE_CHECK(cfg.data.eval_batch_size > 0, ConfigError,
              "{}: data.eval_batch_size = {} must be positive", where("data.eval_batch_size"),
              cfg.data.eval_batch_size);
  LATHE_CHECK(cfg.data.mean.size() == cfg.data.std.size(), ConfigError,
              "{}: data.mean has {} values but data.std has {}; give both per channel or neither",
              where("data.mean"), cfg.data.mean.size(), cfg.data.std.size());
  for (double s : cfg.data.std)
    LATHE_CHECK(s > 0, ConfigError, "{}: data.std values must be positive, got {}",
                where("data.std"), s);
  LATHE_CHECK(cfg.optim.lr > 0, ConfigError, "{}: optim.lr = {} must be positive",
              where("optim.lr"), cfg.optim.lr);
  LATHE_CHECK(cfg.optim.betas.size() == 2, ConfigError,
              "{}: optim.betas needs two values [beta1, beta2], got {}", where("optim.betas"),
              cfg.optim.betas.size());
  LATHE_CHECK(cfg.optim.warmup_fraction >= 0 && cfg.optim.warmup_fraction < 1, ConfigError,
              "{}: optim.warmup_fraction = {} must be in [0, 1)", where("optim.warmup_fraction"),
              cfg.optim.warmup_fraction);
  LATHE_CHECK(cfg.trainer.max_epochs > 0, ConfigError,
              "{}: trainer.max_epochs = {} must be positive", where("trainer.max_epochs"),
              cfg.trainer.max_epochs);
  LATHE_CHECK(cfg.trainer.log_every_n_steps > 0, ConfigError,
              "{}: trainer.log_every_n_steps = {} must be positive",
              where("trainer.log_every_n_steps"), cfg.trainer.log_every_n_steps);
  const auto& p = cfg.trainer.progress;
  LATHE_CHECK(p == "auto" || p == "bar" || p == "plain" || p == "none", ConfigError,
              "{}: trainer.progress = '{}' must be one of auto, bar, plain, none",
              where("trainer.progress"), p);
  LATHE_CHECK(!cfg.run.name.empty() && cfg.run.name.find('/') == std::string::npos, ConfigError,
              "{}: run.name = '{}' must be a non-empty folder name without '/'",
              where("run.name"), cfg.run.name);
  return cfg;
}

}  // namespace

RunConfig parse_config(std::string_view yaml, std::string_view origin_name,
                       const std::vector<std::string>& overrides) {
  Origin origin{std::string(origin_name), {}};
  YAML::Node root;
  try {
    root = YAML::Load(std::string(yaml));
  } catch (const YAML::Exception& e) {
    throw ConfigError(fmt::format("{}:{}:{}: not valid YAML: {}", origin.file, e.mark.line + 1,
                                  e.mark.column + 1, e.msg));
  }
  return from_tree(root, origin, overrides);
}

RunConfig load_config(const std::filesystem::path& file,
                      const std::vector<std::string>& overrides) {
  std::ifstream in(file, std::ios::binary);
  LATHE_CHECK(in.good(), ConfigError, "{}: cannot open the config file ({})", file.string(),
              std::filesystem::exists(file) ? "not readable" : "no such file");
  std::stringstream buf;
  buf << in.rdbuf();
  return parse_config(buf.str(), file.string(), overrides);
}

ModelSection parse_model_section(const std::string& name,
                                 const std::vector<std::string>& options) {
  Origin origin{"command line", {}};
  YAML::Node root(YAML::NodeType::Map);
  root["name"] = name;
  for (const auto& o : options) apply_override(root, o, origin);
  ModelSection out;
  Section model(root, "model", origin);
  read_model(model, out);
  return out;
}

namespace {
std::string num(double v) { return fmt::format("{}", v); }
}  // namespace

std::string to_yaml(const RunConfig& c) {
  YAML::Emitter out;
  out << YAML::BeginMap;
  out << YAML::Key << "run" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.run.name;
  out << YAML::Key << "dir" << YAML::Value << c.run.dir;
  out << YAML::Key << "seed" << YAML::Value << c.run.seed;
  out << YAML::Key << "device" << YAML::Value << c.run.device;
  out << YAML::Key << "threads" << YAML::Value << c.run.threads;
  out << YAML::Key << "deterministic" << YAML::Value << c.run.deterministic;
  out << YAML::EndMap;

  out << YAML::Key << "data" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "source" << YAML::Value << c.data.source;
  out << YAML::Key << "path" << YAML::Value << c.data.path;
  out << YAML::Key << "test_path" << YAML::Value << c.data.test_path;
  out << YAML::Key << "val_fraction" << YAML::Value << num(c.data.val_fraction);
  out << YAML::Key << "test_fraction" << YAML::Value << num(c.data.test_fraction);
  out << YAML::Key << "batch_size" << YAML::Value << c.data.batch_size;
  out << YAML::Key << "eval_batch_size" << YAML::Value << c.data.eval_batch_size;
  out << YAML::Key << "limit_train" << YAML::Value << c.data.limit_train;
  out << YAML::Key << "limit_test" << YAML::Value << c.data.limit_test;
  const auto list = [&](const char* key, const std::vector<double>& v) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (double x : v) out << num(x);
    out << YAML::EndSeq;
  };
  list("mean", c.data.mean);
  list("std", c.data.std);
  out << YAML::Key << "num_workers" << YAML::Value << c.data.num_workers;
  out << YAML::Key << "skip_bad_records" << YAML::Value << c.data.skip_bad_records;
  out << YAML::Key << "target" << YAML::Value << c.data.target;
  out << YAML::Key << "task" << YAML::Value << c.data.task;
  out << YAML::Key << "impute" << YAML::Value << c.data.impute;
  out << YAML::Key << "outliers" << YAML::Value << c.data.outliers;
  out << YAML::Key << "scale" << YAML::Value << c.data.scale;
  out << YAML::Key << "encode" << YAML::Value << c.data.encode;
  out << YAML::Key << "columns" << YAML::Value << YAML::BeginMap;
  for (const auto& [key, v] : c.data.columns.values()) {
    out << YAML::Key << key << YAML::Value << YAML::Flow << YAML::BeginSeq;
    for (const auto& item : v.items) out << item;
    out << YAML::EndSeq;
  }
  out << YAML::EndMap;
  out << YAML::Key << "image_size" << YAML::Value << c.data.image_size;
  out << YAML::Key << "augment" << YAML::Value << YAML::Flow << YAML::BeginSeq;
  for (const auto& a : c.data.augment) out << a;
  out << YAML::EndSeq;
  out << YAML::Key << "seq_len" << YAML::Value << c.data.seq_len;
  out << YAML::Key << "vocab" << YAML::Value << c.data.vocab;
  out << YAML::Key << "max_length" << YAML::Value << c.data.max_length;
  out << YAML::Key << "text_column" << YAML::Value << c.data.text_column;
  out << YAML::EndMap;

  out << YAML::Key << "model" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.model.name;
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

  out << YAML::Key << "optim" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "name" << YAML::Value << c.optim.name;
  out << YAML::Key << "lr" << YAML::Value << num(c.optim.lr);
  out << YAML::Key << "weight_decay" << YAML::Value << num(c.optim.weight_decay);
  out << YAML::Key << "momentum" << YAML::Value << num(c.optim.momentum);
  out << YAML::Key << "nesterov" << YAML::Value << c.optim.nesterov;
  list("betas", c.optim.betas);
  out << YAML::Key << "schedule" << YAML::Value << c.optim.schedule;
  out << YAML::Key << "warmup_fraction" << YAML::Value << num(c.optim.warmup_fraction);
  out << YAML::Key << "min_lr_ratio" << YAML::Value << num(c.optim.min_lr_ratio);
  out << YAML::EndMap;

  out << YAML::Key << "trainer" << YAML::Value << YAML::BeginMap;
  out << YAML::Key << "max_epochs" << YAML::Value << c.trainer.max_epochs;
  out << YAML::Key << "log_every_n_steps" << YAML::Value << c.trainer.log_every_n_steps;
  out << YAML::Key << "progress" << YAML::Value << c.trainer.progress;
  out << YAML::EndMap;
  out << YAML::EndMap;
  return std::string(out.c_str()) + "\n";
}

}  // namespace lathe::config
