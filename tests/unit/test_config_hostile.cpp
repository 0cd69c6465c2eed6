// Hostile configs: what YAML would accept silently (a key twice, a second document, a key the
// source ignores, a repeated class id) is a ConfigError naming it; deep nesting is no crash.
// Reader-level only, so the sanitizer build runs this file too.
#include <string>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "tests/support.h"

using lathe::ConfigError;
using lathe::config::parse_config;
using lathe::testing::expect_error;

TEST(HostileConfig, DuplicateKeysAreErrorsNamingBothLines) {
  expect_error<ConfigError>(
      [] { parse_config("data:\n  path: a\n  path: b\nmodel: {name: convnet}\n", "d.yaml"); },
      {"d.yaml:3", "key 'data.path' appears twice", "first on line 2"});
  expect_error<ConfigError>(
      [] { parse_config("data: {path: a}\nmodel: {name: convnet}\ndata: {path: b}\n", "d.yaml"); },
      {"d.yaml:3", "key 'data' appears twice", "first on line 1"});
}

TEST(HostileConfig, ASecondDocumentIsAnError) {
  expect_error<ConfigError>(
      [] { parse_config("data: {path: a}\nmodel: {name: convnet}\n---\nrun: {}\n", "d.yaml"); },
      {"d.yaml:3", "a second YAML document"});
}

TEST(HostileConfig, AKeyTheSourceDoesNotUseIsAnError) {
  expect_error<ConfigError>(
      [] {
        parse_config(
            "data:\n  source: csv\n  path: a.csv\n  target: y\n  seq_len: 64\n"
            "model: {name: mlp}\n",
            "d.yaml");
      },
      {"d.yaml:5", "data.seq_len does not apply to source csv", "It applies to: text"});
  expect_error<ConfigError>(
      [] {
        parse_config("data: {source: text, path: a.txt}\nmodel: {name: gpt2}\n", "d.yaml",
                     {"data.vocab=v.txt"});
      },
      {"override 'data.vocab=v.txt'", "data.vocab does not apply to source text"});
  // Defaults written back by a run (config.yaml) are not "set".
  const auto cfg =
      parse_config("data: {source: csv, path: a.csv, target: y}\nmodel: {name: mlp}\n", "d.yaml");
  EXPECT_NO_THROW(parse_config(lathe::config::to_yaml(cfg), "config.yaml"));
}

TEST(HostileConfig, RepeatedOrNegativeClassIdIsRefused) {
  expect_error<ConfigError>(
      [] {
        parse_config("data: {path: a, classes: [0, 2, 0]}\nmodel: {name: convnet}\n", "d.yaml");
      },
      {"data.classes lists class 0 twice", "positions 0 and 2"});
  expect_error<ConfigError>(
      [] { parse_config("data: {path: a, classes: [-1]}\nmodel: {name: convnet}\n", "d.yaml"); },
      {"data.classes holds -1"});
}

TEST(HostileConfig, DeepNestingOrAnOpenQuoteIsAnErrorNotACrashOrAHang) {
  const std::string deep = "data: " + std::string(100000, '[') + std::string(100000, ']') + "\n";
  expect_error<ConfigError>([&] { parse_config(deep, "deep.yaml"); },
                            {"deep.yaml", "not valid YAML"});
  // yaml-cpp 0.7's LoadAll never returns on these two bytes (the config fuzzer found it); Load
  // reads them as an empty document.
  expect_error<ConfigError>([] { parse_config(",\"", "q.yaml"); },
                            {"q.yaml", "missing required key 'data.path'"});
  // A list used as a key (yaml-cpp's conversion threw a bare "bad conversion"; fuzzer-found).
  expect_error<ConfigError>(
      [] {
        parse_config("data: {source: csv, path: a, target: y, columns: {[x]: [impute=mean]}}\n"
                     "model: {name: mlp}\n",
                     "k.yaml");
      },
      {"k.yaml:1", "a key under 'data.columns' is a list, not a name"});
}

TEST(HostileConfig, AConfigPathThatIsAFolderOrDeviceIsNamed) {
  lathe::testing::TempDir dir;
  expect_error<ConfigError>([&] { lathe::config::load_config(dir.path(), {}); },
                            {dir.path().string(), "cannot open the config file", "it is a folder"});
  expect_error<ConfigError>([] { lathe::config::load_config("/dev/zero", {}); },
                            {"/dev/zero", "it is a device"});
}

TEST(HostileConfig, ImageAugmentationAndPixelLimitsAreBounded) {
  expect_error<ConfigError>(
      [] {
        parse_config(
            "data: {source: image_folder, path: p, image_size: 100000}\nmodel: {name: "
            "convnet}\n",
            "d.yaml");
      },
      {"data.image_size = 100000 must be in [0, 8192]"});
  expect_error<ConfigError>(
      [] {
        parse_config(
            "data: {source: image_folder, path: p, max_image_pixels: 0}\nmodel: {name: "
            "convnet}\n",
            "d.yaml");
      },
      {"data.max_image_pixels"});
}
