// Config: YAML → typed structs, overrides, and each error naming file, line and key.
#include "lathe/config/config.h"

#include <map>
#include <regex>
#include <set>
#include <sstream>

#include "lathe/config/reference.h"
#include "lathe/core/error.h"
#include "lathe/run/sweep.h"
#include "models/registry.h"
#include "tests/support.h"

using lathe::ConfigError;
using lathe::config::parse_config;
using lathe::testing::expect_error;

namespace {

const char* kGood = R"(run:
  name: demo
  seed: 7
data:
  path: /data/fm
  batch_size: 64
  mean: [0.5]
  std: [0.25]
model:
  name: convnet
  channels: [8, 16]
  hidden: 32
optim:
  name: sgd
  lr: 0.05
  nesterov: true
trainer:
  max_epochs: 3
)";

}  // namespace

TEST(Config, ReadsEveryTypedField) {
  const auto cfg = parse_config(kGood, "good.yaml");
  EXPECT_EQ(cfg.run.name, "demo");
  EXPECT_EQ(cfg.run.seed, 7u);
  EXPECT_EQ(cfg.run.device, "auto");  // default
  EXPECT_EQ(cfg.data.path, "/data/fm");
  EXPECT_EQ(cfg.data.batch_size, 64);
  EXPECT_EQ(cfg.data.mean, std::vector<double>{0.5});
  EXPECT_EQ(cfg.model.name, "convnet");
  EXPECT_EQ(cfg.model.params.get_int_list("channels", {}), (std::vector<int64_t>{8, 16}));
  EXPECT_EQ(cfg.optim.name, "sgd");
  EXPECT_DOUBLE_EQ(cfg.optim.lr, 0.05);
  EXPECT_TRUE(cfg.optim.nesterov);
  EXPECT_EQ(cfg.trainer.max_epochs, 3);
  EXPECT_EQ(cfg.run_dir(), std::filesystem::path("runs/demo"));
}

TEST(Config, OverridesReplaceAddAndTypeValues) {
  const auto cfg = parse_config(kGood, "good.yaml",
                                {"trainer.max_epochs=9", "data.mean=[0.1]", "data.std=[2]",
                                 "run.device=cpu", "model.dropout=0.5"});
  EXPECT_EQ(cfg.trainer.max_epochs, 9);
  EXPECT_EQ(cfg.data.mean, std::vector<double>{0.1});
  EXPECT_EQ(cfg.run.device, "cpu");
  EXPECT_DOUBLE_EQ(cfg.model.params.get_double("dropout", 0), 0.5);
}

TEST(Config, UnknownKeyNamesFileLineAndSuggests) {
  const std::string yaml = std::string(kGood) + "  max_epoch: 4\n";
  expect_error<ConfigError>([&] { parse_config(yaml, "runs.yaml"); },
                            {"runs.yaml:19", "unknown key 'trainer.max_epoch'",
                             "did you mean 'trainer.max_epochs'"});
}

TEST(Config, UnknownSectionIsRejected) {
  expect_error<ConfigError>([&] { parse_config(std::string(kGood) + "optimizer: {}\n", "a.yaml"); },
                            {"a.yaml:19", "unknown key 'optimizer'"});
}

TEST(Config, WrongTypeNamesKeyAndValue) {
  expect_error<ConfigError>(
      [&] { parse_config("data: {path: x, batch_size: lots}\nmodel: {name: convnet}\n", "t.yaml"); },
      {"t.yaml:1", "data.batch_size", "expects an integer", "'lots'"});
  expect_error<ConfigError>(
      [&] { parse_config("data: {path: x}\nmodel: {name: convnet}\noptim: {lr: [1]}\n", "t.yaml"); },
      {"t.yaml:3", "optim.lr", "expects a number, got a list"});
  expect_error<ConfigError>(
      [&] { parse_config("data: {path: x, mean: 0.5}\nmodel: {name: convnet}\n", "t.yaml"); },
      {"data.mean", "expects a list of numbers"});
}

TEST(Config, MissingRequiredField) {
  expect_error<ConfigError>([&] { parse_config("model: {name: convnet}\n", "m.yaml"); },
                            {"m.yaml", "missing required key 'data.path'"});
  expect_error<ConfigError>([&] { parse_config("data: {path: x}\n", "m.yaml"); },
                            {"missing required key 'model.name'"});
}

TEST(Config, BadOverrides) {
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"trainer.max_epochs"}); },
                            {"bad override 'trainer.max_epochs'", "expected key=value"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"trainer.max_epochs="}); },
                            {"no value after '='"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"run.name.x=1"}); },
                            {"'run.name' is a value, not a section"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"trainer..x=1"}); },
                            {"empty name"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"trainer.max_epochs=abc"}); },
                            {"override 'trainer.max_epochs=abc'", "expects an integer"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"trainer.epochs=3"}); },
                            {"override 'trainer.epochs=3'", "unknown key 'trainer.epochs'"});
}

TEST(Config, ValuesOutOfRange) {
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"data.val_fraction=1.5"}); },
                            {"data.val_fraction = 1.5 must be in [0, 1)"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"trainer.progress=loud"}); },
                            {"trainer.progress = 'loud'"});
  expect_error<ConfigError>([&] { parse_config(kGood, "g.yaml", {"data.std=[1, 2]"}); },
                            {"data.mean has 1 values but data.std has 2"});
}

TEST(Config, InvalidYamlNamesLine) {
  expect_error<ConfigError>([&] { parse_config("data:\n  path: [x\n", "bad.yaml"); },
                            {"bad.yaml:", "not valid YAML"});
  expect_error<ConfigError>([&] { parse_config("- a\n- b\n", "list.yaml"); },
                            {"list.yaml", "mapping of sections"});
}

TEST(Config, MissingFile) {
  expect_error<ConfigError>([&] { lathe::config::load_config("/nonexistent/run.yaml"); },
                            {"/nonexistent/run.yaml", "no such file"});
}

TEST(Config, ModelOptionsAreCheckedByTheModel) {
  const auto cfg = parse_config(std::string(kGood) + "", "g.yaml", {"model.hiden=3"});
  expect_error<ConfigError>([&] { lathe::models::build_model(cfg.model); },
                            {"override 'model.hiden=3'", "unknown key 'model.hiden'",
                             "did you mean 'hidden'"});
  const auto typo = parse_config(kGood, "g.yaml", {"model.name=convnett"});
  expect_error<ConfigError>([&] { lathe::models::build_model(typo.model); },
                            {"unknown model 'convnett'", "did you mean 'convnet'"});
  const auto wrong = parse_config(kGood, "g.yaml", {"model.hidden=big"});
  expect_error<ConfigError>([&] { lathe::models::build_model(wrong.model); },
                            {"model.hidden", "expects an integer", "'big'"});
}

TEST(Config, ResolvedYamlReadsBackTheSame) {
  const auto cfg = parse_config(kGood, "good.yaml");
  const std::string yaml = lathe::config::to_yaml(cfg);
  const auto again = parse_config(yaml, "resolved.yaml");
  EXPECT_EQ(lathe::config::to_yaml(again), yaml);
  EXPECT_EQ(again.run.seed, 7u);
  EXPECT_EQ(again.model.params.get_int_list("channels", {}), (std::vector<int64_t>{8, 16}));
  EXPECT_DOUBLE_EQ(again.optim.lr, 0.05);
}

TEST(Config, ShippedConfigsParse) {
  // Every YAML file under configs/, at any depth: run configs load and build their model; sweep
  // files (configs/sweeps/) load, and their base config with every trial's overrides does too.
  std::map<std::string, int> parsed;  // folder under configs/ → files
  const std::filesystem::path root = lathe::testing::source_dir() + "/configs";
  for (const auto& entry : std::filesystem::recursive_directory_iterator(root)) {
    if (entry.path().extension() != ".yaml") continue;
    SCOPED_TRACE(entry.path().string());
    const std::string folder = entry.path().parent_path().lexically_relative(root).string();
    if (folder == "sweeps") {
      const auto sweep = lathe::run::load_sweep(entry.path());
      const auto trials = lathe::run::sample_trials(sweep);
      EXPECT_FALSE(trials.empty());
      for (const auto& trial : trials) {
        std::vector<std::string> overrides = sweep.overrides;
        overrides.insert(overrides.end(), trial.begin(), trial.end());
        const auto cfg = lathe::config::load_config(sweep.base, overrides);
        EXPECT_NO_THROW(lathe::models::build_model(cfg.model));
      }
    } else {
      const auto cfg = lathe::config::load_config(entry.path());
      EXPECT_NO_THROW(lathe::models::build_model(cfg.model));
    }
    ++parsed[folder];
  }
  EXPECT_GE(parsed["."], 6);
  EXPECT_GE(parsed["finetune"], 5);
  EXPECT_GE(parsed["sweeps"], 1);
}

TEST(Config, TheReadmesAnnotatedConfigParses) {
  // README.md shows one complete run config; it must load as it is written and build its model.
  const std::string readme = lathe::testing::read_text(lathe::testing::source_dir() + "/README.md");
  const auto begin = readme.find("```yaml\n");
  ASSERT_NE(begin, std::string::npos) << "README.md has no ```yaml block";
  const auto end = readme.find("```", begin + 8);
  const std::string yaml = readme.substr(begin + 8, end - begin - 8);
  const auto cfg = parse_config(yaml, "README.md");
  EXPECT_EQ(cfg.run.name, "fashion_cnn");
  EXPECT_NO_THROW(lathe::models::build_model(cfg.model));
  // It is configs/fashion_cnn.yaml with defaults written out: both resolve to the same config.
  EXPECT_EQ(lathe::config::to_yaml(cfg),
            lathe::config::to_yaml(lathe::config::load_config(lathe::testing::source_dir() +
                                                              "/configs/fashion_cnn.yaml")));
}

TEST(Config, ReferencePageIsCurrent) {
  // docs/configuration-reference.md is generated from the schema (config_keys) and config.h's
  // doc comments; the committed page must be what the generator writes now.
  const std::string src = lathe::testing::source_dir();
  const std::string page = lathe::testing::read_text(src + "/docs/configuration-reference.md");
  const std::string want = lathe::config::reference_markdown(
      lathe::testing::read_text(src + "/include/lathe/config/config.h"));
  EXPECT_TRUE(page == want)
      << "docs/configuration-reference.md is stale (the config schema or its doc comments "
         "changed): regenerate it with `cmake --build build/ci --target config-reference` and "
         "commit the page";
  // Every key of the schema has its row.
  for (const auto& key : lathe::config::config_keys()) {
    const std::string name = key.key.substr(key.key.rfind('.') + 1);
    EXPECT_NE(want.find("| `" + name + "` | " + key.type), std::string::npos) << key.key;
  }
  EXPECT_GT(lathe::config::config_keys().size(), 100u);
}

namespace {

/// Every dotted key of a config: the resolved YAML of a default config, read by indentation.
std::set<std::string> schema_keys() {
  const auto cfg = parse_config("data: {path: x}\nmodel: {name: convnet}\n", "schema.yaml");
  std::set<std::string> keys;
  std::vector<std::string> stack;
  std::istringstream lines(lathe::config::to_yaml(cfg));
  for (std::string line; std::getline(lines, line);) {
    const auto indent = line.find_first_not_of(' ');
    const auto colon = line.find(':');
    if (indent == std::string::npos || colon == std::string::npos) continue;
    stack.resize(indent / 2);
    stack.push_back(line.substr(indent, colon - indent));
    std::string dotted;
    for (const auto& part : stack) dotted += (dotted.empty() ? "" : ".") + part;
    keys.insert(dotted);
  }
  return keys;
}

}  // namespace

TEST(Config, EveryKeyAHintNamesIsInTheSchema) {
  // String literals of the library (src/, models/, include/) that name section.key must name a
  // real key, so that a hint like "set data.skip_bad_records" can be followed as written.
  const std::set<std::string> keys = schema_keys();
  ASSERT_TRUE(keys.count("data.skip_bad_records") && keys.count("optim.schedule.name"));
  const std::regex literal(R"re("(?:[^"\\\n]|\\.)*")re");
  const std::regex key(
      R"(\b(run|data|task|optim|trainer|checkpoint|dist)\.([a-z_0-9]+)(\.[a-z_0-9]+)?)");
  int checked = 0;
  const std::string root = lathe::testing::source_dir();
  for (const char* dir : {"src", "models", "include"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root + "/" + dir)) {
      const auto ext = entry.path().extension();
      if (ext != ".cpp" && ext != ".h") continue;
      const std::string text = lathe::testing::read_text(entry.path());
      for (auto s = std::sregex_iterator(text.begin(), text.end(), literal);
           s != std::sregex_iterator(); ++s) {
        const std::string lit = s->str();
        for (auto k = std::sregex_iterator(lit.begin(), lit.end(), key);
             k != std::sregex_iterator(); ++k) {
          const auto at = static_cast<size_t>(k->position());
          if (at > 0 && (lit[at - 1] == '/' || lit[at - 1] == '_')) continue;  // a path
          const std::string two = (*k)[1].str() + "." + (*k)[2].str();
          static const std::set<std::string> files{"yaml", "json", "pkl", "csv", "txt", "onnx", "md"};
          if (files.count((*k)[2])) continue;  // run.yaml, data.pkl: file names
          const std::string three = two + (*k)[3].str();
          ++checked;
          EXPECT_TRUE(keys.count(three) || keys.count(two))
              << entry.path().string() << ": " << lit << " names '" << three
              << "', which is not a config key";
        }
      }
    }
  }
  EXPECT_GT(checked, 50);
}

TEST(Config, HintsSayTheWholeDottedKey) {
  // "set skip_bad_rows" named no key at all (the key is data.skip_bad_records): a hint that says
  // "set <name_with_underscores>" must say section.key.
  const std::regex literal(R"re("(?:[^"\\\n]|\\.)*")re");
  const std::regex bare(R"(\bset ([a-z]+_[a-z_]+)\b)");
  const std::string root = lathe::testing::source_dir();
  for (const char* dir : {"src", "models", "include"}) {
    for (const auto& entry : std::filesystem::recursive_directory_iterator(root + "/" + dir)) {
      const auto ext = entry.path().extension();
      if (ext != ".cpp" && ext != ".h") continue;
      const std::string text = lathe::testing::read_text(entry.path());
      for (auto s = std::sregex_iterator(text.begin(), text.end(), literal);
           s != std::sregex_iterator(); ++s) {
        const std::string lit = s->str();
        std::smatch m;
        EXPECT_FALSE(std::regex_search(lit, m, bare))
            << entry.path().string() << ": " << lit << " hints at '" << m[1]
            << "' without its section (write section.key)";
      }
    }
  }
}
