// Generation benchmark, C++ side: greedy decoding with lathe's gpt2 (key/value cache, and without
// it for reference) on Hugging Face weights, tokens per second, best of N. Prints JSON;
// bench/generate_bench.py runs it beside transformers' GPT2LMHeadModel.generate on the same
// weights, prompt and threads, and checks that both produce the same tokens.
#include <ATen/Parallel.h>

#include <chrono>
#include <cstdio>
#include <sstream>
#include <string>
#include <vector>

#include <fmt/ranges.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/ckpt/state_dict.h"
#include "lathe/run/generate.h"
#include "models/transformer/gpt2.h"

int main(int argc, char** argv) {
  if (argc != 10) {
    std::fprintf(stderr,
                 "usage: generate_bench MODEL.safetensors VOCAB POSITIONS EMBD LAYERS HEADS "
                 "PROMPT_IDS(comma-separated) NEW_TOKENS THREADS\n");
    return 2;
  }
  const auto arg = [&](int i) { return std::stoll(argv[i]); };
  at::set_num_threads(static_cast<int>(arg(9)));
  lathe::models::GPT2 gpt2(lathe::models::GPT2Options()
                               .vocab_size(arg(2))
                               .n_positions(arg(3))
                               .n_embd(arg(4))
                               .n_layer(arg(5))
                               .n_head(arg(6)));
  const auto report = lathe::ckpt::load_weights(*gpt2, argv[1]);
  if (!report.clean()) {
    std::fprintf(stderr, "%s\n", report.summary().c_str());
    return 1;
  }
  std::vector<int64_t> prompt;
  std::stringstream in(argv[7]);
  for (std::string item; std::getline(in, item, ',');) prompt.push_back(std::stoll(item));
  const int64_t n = arg(8);
  torch::nn::AnyModule model(gpt2);
  lathe::run::SamplingOptions greedy;
  greedy.greedy = true;
  const auto time = [&](bool cache, int repeats, std::vector<int64_t>& ids) {
    double best = 1e30;
    for (int r = 0; r < repeats; ++r) {
      const auto t0 = std::chrono::steady_clock::now();
      ids = lathe::run::generate_tokens(model, prompt, n, greedy, c10::Device(c10::kCPU), cache);
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    }
    return best;
  };
  std::vector<int64_t> ids, uncached_ids;
  time(true, 1, ids);  // warm-up
  const double cached_s = time(true, 5, ids);
  const double uncached_s = time(false, 2, uncached_ids);
  fmt::print("{{\"cached_s\": {:.6f}, \"uncached_s\": {:.6f}, \"same_without_cache\": {}, "
             "\"ids\": [{}]}}\n",
             cached_s, uncached_s, ids == uncached_ids ? "true" : "false", fmt::join(ids, ", "));
  return 0;
}
