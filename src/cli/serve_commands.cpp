// lathe predict / generate: a finished run answering new records and sampling text.
#include <fmt/ranges.h>

#include <cstdlib>
#include <iostream>
#include <sstream>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "lathe/run/generate.h"
#include "lathe/run/predict.h"
#include "src/cli/commands.h"

namespace lathe::cli {
namespace {

/// Streams the CSV / JSONL text into an AtomicFile: the file appears whole, or not at all.
class AtomicStreamBuf : public std::streambuf {
 public:
  explicit AtomicStreamBuf(AtomicFile& file) : file_(file) {}

 protected:
  int_type overflow(int_type c) override {
    if (c != traits_type::eof()) {
      const char ch = static_cast<char>(c);
      file_.write(&ch, 1);
    }
    return c;
  }
  std::streamsize xsputn(const char* s, std::streamsize n) override {
    file_.write(s, static_cast<size_t>(n));
    return n;
  }

 private:
  AtomicFile& file_;
};

void add_predict(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "predict", "Answer new records with a finished run: images, CSV rows or texts");
  cmd->footer(
      "Examples:\n  lathe predict runs/wine_mlp new_wines.csv -o answers.csv\n"
      "  lathe predict runs/fashion_cnn 'shirts/*.png' --top-k 3 -o answers.jsonl\n"
      "The records are prepared as the run's own data was (its fitted normalisation, imputation, "
      "scaling and encoding); CSV input is read --batch-size rows at a time.\n"
      "id: an image's path; a CSV record's 1-based number in its file (the header and blank lines "
      "not counted, a skipped malformed record counted, so every answer keeps its record's "
      "number); a text file's line number. With several files: file:number.");
  auto run_dir = std::make_shared<std::string>();
  auto inputs = std::make_shared<std::vector<std::string>>();
  auto output = std::make_shared<std::string>();
  auto options = std::make_shared<run::PredictOptions>();
  auto weights = std::make_shared<std::string>();
  cmd->add_option("run", *run_dir, "Run folder (runs/<name>) holding config.yaml")->required();
  cmd->add_option("inputs", *inputs,
                  "Image files, folders or globs (image runs); CSV files (csv runs); a CSV with "
                  "the text column or a file of one text per line (text_csv runs)")
      ->required();
  cmd->add_option("-o,--output", *output,
                  "Where the answers go: a .csv or .jsonl file (default: CSV on stdout)");
  cmd->add_option("--weights", *weights, "Weights to use instead of RUN/model.safetensors");
  cmd->add_option("--batch-size", options->batch_size,
                  "Records per forward pass (default: the run's data.eval_batch_size)");
  cmd->add_option("--device", options->device, "cpu, cuda, cuda:N or auto (default: the run's)");
  cmd->add_option("--top-k", options->top_k, "Classification: the k most probable classes");
  cmd->callback([=, &exit_code] {
    std::string ext = std::filesystem::path(*output).extension().string();
    LATHE_CHECK(output->empty() || ext == ".csv" || ext == ".jsonl", ConfigError,
                "-o {}: write the answers to a .csv or .jsonl file", *output);
    options->weights = *weights;
    options->progress = log::is_tty(stderr);
    const Doing doing(fmt::format("predicting with {}", *run_dir));
    std::unique_ptr<AtomicFile> file;
    std::unique_ptr<AtomicStreamBuf> buf;
    std::unique_ptr<std::ostream> stream;
    if (!output->empty()) {
      file = std::make_unique<AtomicFile>(*output);
      buf = std::make_unique<AtomicStreamBuf>(*file);
      stream = std::make_unique<std::ostream>(buf.get());
    }
    std::ostream& out = stream ? *stream : std::cout;
    run::PredictionWriter writer(out, ext == ".jsonl", options->top_k);
    const auto summary = run::predict(*run_dir, *inputs, *options,
                                      [&](const auto& batch) { writer.write(batch); });
    out.flush();
    if (file) file->commit();
    log::info("{} records answered ({}){}{}", summary.records, summary.task,
              summary.skipped > 0 ? fmt::format(", {} left out by the run's rules", summary.skipped)
                                  : "",
              output->empty() ? "" : fmt::format(" → {}", *output));
    exit_code = kOk;
  });
}

/// "464,3290 13" → {464, 3290, 13}; anything else is a ConfigError naming the option.
std::vector<int64_t> parse_ids(const std::string& text) {
  std::vector<int64_t> ids;
  std::string item;
  std::stringstream in(text);
  while (in >> item) {
    std::stringstream parts(item);
    for (std::string part; std::getline(parts, part, ',');) {
      if (part.empty()) continue;
      char* end = nullptr;
      const long long v = std::strtoll(part.c_str(), &end, 10);
      LATHE_CHECK(end != nullptr && *end == '\0' && v >= 0, ConfigError,
                  "--prompt-ids: '{}' is not a token id (give non-negative integers, e.g. "
                  "--prompt-ids 464,3290)",
                  part);
      ids.push_back(v);
    }
  }
  return ids;
}

void add_generate(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "generate", "Sample text from a finished language-model run (gpt2, lstm_lm, gru_lm)");
  cmd->footer(
      "Example:\n  lathe generate runs/fortunes_gpt --prompt 'The ' --max-new-tokens 80 "
      "--temperature 0.8 --top-p 0.9 --seed 1\nSampling follows Hugging Face's generate: "
      "temperature, then top-k, then top-p; --temperature 0 or --greedy is argmax.");
  auto run_dir = std::make_shared<std::string>();
  auto prompt_ids = std::make_shared<std::string>();
  auto o = std::make_shared<run::GenerateOptions>();
  auto weights = std::make_shared<std::string>();
  auto no_cache = std::make_shared<bool>(false);
  cmd->add_option("run", *run_dir, "Run folder (runs/<name>) holding config.yaml")->required();
  cmd->add_option("--prompt", o->prompt, "The text to continue (text runs: bytes or data.tokenizer)");
  cmd->add_option("--prompt-ids", *prompt_ids,
                  "Or the token ids to continue, e.g. 464,3290 (any vocabulary); prints ids");
  cmd->add_option("--max-new-tokens", o->max_new_tokens, "Tokens to add (64)");
  cmd->add_option("--temperature", o->sampling.temperature, "Logits / T before sampling; 0 = greedy");
  cmd->add_option("--top-k", o->sampling.top_k, "Sample among the k most likely tokens (0 = all)");
  cmd->add_option("--top-p", o->sampling.top_p,
                  "Sample among the most likely tokens whose probability reaches p (1 = all)");
  cmd->add_option("--seed", o->sampling.seed, "Seed of the draws (0)");
  cmd->add_flag("--greedy", o->sampling.greedy, "Always the most likely token");
  cmd->add_flag("--no-cache", *no_cache,
                "Recompute the whole sequence each step (no key/value cache or carried state)");
  cmd->add_option("--weights", *weights, "Weights to use instead of RUN/model.safetensors");
  cmd->add_option("--device", o->device, "cpu, cuda, cuda:N or auto (default: the run's)");
  cmd->callback([=, &exit_code] {
    o->prompt_ids = parse_ids(*prompt_ids);
    o->weights = *weights;
    o->use_cache = !*no_cache;
    const run::Generation g = run::generate(*run_dir, *o);
    if (!g.has_text || !prompt_ids->empty()) {
      std::vector<int64_t> all = g.prompt_ids;
      all.insert(all.end(), g.new_ids.begin(), g.new_ids.end());
      fmt::print("{}\n", fmt::join(all, " "));
    } else {
      fmt::print("{}\n", g.text);
    }
    log::info("{} new tokens in {:.3f}s ({:.1f} tokens/s)", g.new_ids.size(), g.seconds,
              g.seconds > 0 ? static_cast<double>(g.new_ids.size()) / g.seconds : 0.0);
    exit_code = kOk;
  });
}

}  // namespace

void add_serve_commands(CLI::App& app, int& exit_code) {
  add_predict(app, exit_code);
  add_generate(app, exit_code);
}

}  // namespace lathe::cli
