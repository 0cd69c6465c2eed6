// The Llama-family oracle's files (tests/parity/llama_oracle.py), made once per oracle version
// and shared by the test executables that read them.
#pragma once

#include <ATen/ATen.h>
#include <fmt/format.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "lathe/ckpt/safetensors.h"
#include "tests/support.h"

namespace lathe::testing {

/// What tests/parity/llama_oracle.py wrote for one case (see its docstring).
struct LlamaReference {
  std::filesystem::path dir;
  std::vector<std::string> options;
  int64_t params = -1;
  lathe::ckpt::NamedTensors io;

  at::Tensor get(const std::string& name) const {
    for (const auto& [k, v] : io)
      if (k == name) return v;
    ADD_FAILURE() << "the oracle wrote no tensor '" << name << "'";
    return at::zeros({1});
  }
};

/// Runs the oracle for `name` once per version of the oracle and of the pinned Python packages
/// (its files go to llama_fixtures/<case>-<hash> in the tests' working folder and later runs
/// reuse them: the oracle is seeded).
inline LlamaReference llama_reference(const std::string& name) {
  namespace fs = std::filesystem;
  at::set_num_threads(1);
  const std::string src = lathe::testing::source_dir();
  const std::string oracle = src + "/tests/parity/llama_oracle.py";
  const size_t version =
      std::hash<std::string>{}(lathe::testing::read_text(oracle) +
                               lathe::testing::read_text(src + "/scripts/requirements.txt"));
  LlamaReference ref;
  ref.dir = fs::current_path() / "llama_fixtures" / fmt::format("{}-{:016x}", name, version);
  if (!fs::exists(ref.dir / "io.safetensors")) {
    const fs::path tmp = ref.dir.string() + fmt::format(".tmp{}", ::getpid());
    fs::remove_all(tmp);
    fs::create_directories(tmp);
    const auto r = lathe::testing::run_command("OMP_NUM_THREADS=1 " + lathe::testing::python() +
                                               " " + oracle + " " + name + " " + tmp.string());
    if (r.status != 0) {
      fs::remove_all(tmp);
      throw std::runtime_error("tests/parity/llama_oracle.py " + name + " failed:\n" + r.output);
    }
    std::error_code ec;
    fs::rename(tmp, ref.dir, ec);  // atomic; another process may have won the race
    if (ec) fs::remove_all(tmp);
  }
  std::ifstream in(ref.dir / "options.txt");
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) ref.options.push_back(line);
  if (fs::exists(ref.dir / "params.txt"))
    ref.params = std::stoll(lathe::testing::read_text(ref.dir / "params.txt"));
  ref.io = lathe::ckpt::load_safetensors(ref.dir / "io.safetensors").tensors;
  return ref;
}

}  // namespace lathe::testing
