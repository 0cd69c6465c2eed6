// lathe train / eval / sweep / info / export / runs / report (predict, generate:
// serve_commands.cpp): argument parsing and the calls into the library.
#include "src/cli/commands.h"

#include <signal.h>

#include <algorithm>
#include <filesystem>

#include <fmt/ranges.h>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/kernel_choice.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "lathe/core/signals.h"
#include "lathe/run/export.h"
#include "lathe/run/model_info.h"
#include "lathe/run/process.h"
#include "lathe/run/report.h"
#include "lathe/run/run.h"
#include "lathe/run/runs.h"
#include "lathe/run/split.h"
#include "lathe/run/sweep.h"

namespace lathe::cli {
namespace {

/// `text` as one shell word: as is when it holds only safe characters, else single-quoted.
std::string shell_word(const std::string& text) {
  const bool plain = !text.empty() && text.find_first_not_of(
                                          "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                                          "0123456789_-+=.,/:@") == std::string::npos;
  if (plain) return text;
  std::string quoted = "'";
  for (const char c : text) quoted += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return quoted + "'";
}

/// The command that continues a stopped run from `checkpoint`: the same config, devices and
/// overrides, with --resume.
std::string resume_command(const std::string& config, int devices,
                           const std::vector<std::string>& overrides,
                           const std::filesystem::path& checkpoint) {
  std::string cmd = "lathe train " + shell_word(config);
  if (devices > 1) cmd += fmt::format(" --devices {}", devices);
  for (const auto& o : overrides) cmd += " " + shell_word(o);
  return cmd + " --resume " + shell_word(checkpoint.string());
}

void add_train(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("train", "Train the run a YAML config describes");
  cmd->footer(
      "Overrides are dotted keys with YAML values, e.g.\n"
      "  lathe train configs/fashion_cnn.yaml trainer.max_epochs=3 run.name=short "
      "data.mean=[0.5]\nThe run writes <run.dir>/<run.name>/: config.yaml, metrics.jsonl, "
      "model.safetensors, test_metrics.json, checkpoints/ (step-N folders, last, best).");
  auto config = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  cmd->add_option("config", *config, "Run config (YAML)")->required();
  auto resume = std::make_shared<std::string>();
  cmd->add_option("overrides", *overrides, "key=value overrides of config keys");
  auto* resume_opt = cmd->add_option("--resume", *resume,
                                     "Continue from a checkpoint: auto (the default: the run's "
                                     "checkpoints/last), a checkpoint folder or a run folder")
                         ->expected(0, 1);
  auto devices = std::make_shared<int>(1);
  cmd->add_option("--devices", *devices,
                  "Train data-parallel on N devices of this machine: one process each (GPUs "
                  "cuda:0..N-1, or N shares of the CPU cores); data.batch_size stays the global "
                  "batch. Across machines use torchrun --no-python ... lathe train CONFIG")
      ->check(CLI::PositiveNumber);
  auto profile = std::make_shared<bool>(false);
  cmd->add_flag(
      "--profile", *profile,
      "Record optimizer steps 6 to 10 with LibTorch's profiler (trainer.profile.steps=[6, 10]): "
      "<run>/profile/trace.json (open in ui.perfetto.dev) and profile.txt, the top operators "
      "and model parts by self time");
  cmd->callback([=, &exit_code] {
    if (*profile) overrides->insert(overrides->begin(), "trainer.profile.steps=[6, 10]");
    if (resume_opt->count() > 0 && resume->empty()) *resume = "auto";
    // `--resume key=value` (no path given) means auto, followed by an override.
    if (resume->find('=') != std::string::npos && !std::filesystem::exists(*resume)) {
      overrides->push_back(*resume);
      *resume = "auto";
    }
    if (*devices > 1 && std::getenv("WORLD_SIZE") == nullptr) {  // the launcher: ranks re-run us
      std::vector<std::string> args{"lathe", "train", *config};
      if (!resume->empty()) args.insert(args.end(), {"--resume", *resume});
      args.insert(args.end(), overrides->begin(), overrides->end());
      // a bad config fails once, here, not N times
      const auto cfg = config::load_config(*config, *overrides);
      exit_code = run::launch_local_ranks(args, *devices);
      // The ranks stopped after the same step on SIGTERM / SIGINT (passed on to them) and rank 0
      // wrote its checkpoint.
      if (exit_code == stop_exit_status(SIGTERM) || exit_code == stop_exit_status(SIGINT)) {
        std::error_code ec;
        const auto last = std::filesystem::canonical(cfg.run_dir() / "checkpoints" / "last", ec);
        if (!ec)
          log::info("to resume: {}", resume_command(*config, *devices, *overrides, last));
      }
      return;
    }
    const Doing doing(fmt::format("training from {}", *config));
    auto cfg = config::load_config(*config, *overrides);
    const StopSignals stop_signals;  // SIGTERM / SIGINT: stop after the step, with a checkpoint
    const auto result = run::train_from_config(std::move(cfg), *resume);
    const run::Rank rank = run::this_rank();
    if (result.stopped_by_signal != 0) {
      exit_code = stop_exit_status(result.stopped_by_signal);
      if (!rank.main || std::getenv("LATHE_LOCAL_LAUNCHER") != nullptr) return;
      const std::string cmd = resume_command(*config, 1, *overrides, result.resume_from);
      if (rank.distributed)
        log::info("to resume: start the ranks as before (torchrun ...) with {}", cmd);
      else
        log::info("to resume: {}", cmd);
      return;
    }
    if (result.test.count("accuracy") && rank.main)
      fmt::print("test accuracy {:.4f}\n", result.test.at("accuracy"));
    exit_code = kOk;
  });
}

void add_eval(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("eval", "Evaluate a finished run's weights on its test split");
  auto run_dir = std::make_shared<std::string>();
  auto weights = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  cmd->add_option("run", *run_dir, "Run folder (runs/<name>) holding config.yaml")->required();
  cmd->add_option("--weights", *weights,
                  "Weights to evaluate: .safetensors or torch.save .pt/.pth, or 'ema' for "
                  "RUN/model_ema.safetensors (trainer.ema) (default: RUN/model.safetensors)");
  cmd->add_option("overrides", *overrides, "key=value overrides of the run's config");
  auto save_inputs = std::make_shared<std::string>();
  cmd->add_option("--save-inputs", *save_inputs,
                  "Also write the test split as the model receives it (\"inputs\", \"targets\") "
                  "to this safetensors file, e.g. to score an exported ONNX file on the same "
                  "records");
  cmd->callback([=, &exit_code] {
    if (!save_inputs->empty()) {
      const Doing doing(fmt::format("writing the test split of {}", *run_dir));
      const int64_t n = run::save_test_split(*run_dir, *overrides, *save_inputs);
      log::info("wrote {} ({} test records)", *save_inputs, n);
    }
    const Doing doing(fmt::format("evaluating the run {}", *run_dir));
    const auto metrics = run::evaluate_run(*run_dir, *weights, *overrides);
    for (const auto& [k, v] : metrics) fmt::print("test {} {:.4f}\n", k, v);
    exit_code = kOk;
  });
}

void add_sweep(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "sweep", "Search hyperparameters: grid or random trials, ASHA stops the weak ones early");
  cmd->footer(
      "A sweep file names a base run config and a space over any of its keys; each trial is a run "
      "folder under <dir>/<name>/. Writes sweep_state.json (for --resume), summary.csv and "
      "best_config.yaml.");
  auto file = std::make_shared<std::string>();
  auto overrides = std::make_shared<std::vector<std::string>>();
  auto resume = std::make_shared<bool>(false);
  cmd->add_option("sweep", *file, "Sweep file (YAML)")->required();
  cmd->add_option("overrides", *overrides, "key=value overrides applied to every trial");
  cmd->add_flag("--resume", *resume, "Continue the sweep from its sweep_state.json");
  cmd->callback([=, &exit_code] {
    const Doing doing(fmt::format("running the sweep {}", *file));
    const auto result = run::run_sweep(run::load_sweep(*file, *overrides), *resume);
    if (result.best >= 0)
      fmt::print("best trial {}: {}\n", result.trials[static_cast<size_t>(result.best)].id,
                 fmt::join(result.trials[static_cast<size_t>(result.best)].params, " "));
    exit_code = kOk;
  });
}

/// The CPU, LATHE_KERNELS and the kernel choices known for this machine (lathe/core/kernel_choice.h).
void print_kernel_choices() {
  const kernels::Machine& m = kernels::machine();
  fmt::print("CPU: {} ({})\n", m.cpu, m.flags);
  const kernels::Mode mode = kernels::mode();
  const std::filesystem::path file = kernels::cache_file();
  if (mode != kernels::Mode::automatic) {
    fmt::print("kernels: LATHE_KERNELS={}: {}'s everywhere\n", kernels::mode_name(mode),
               mode == kernels::Mode::lathe ? "lathe" : "ATen");
    return;
  }
  fmt::print("kernels: LATHE_KERNELS=auto: lathe's or ATen's, whichever times faster here; choices "
             "kept in {}\n",
             file.empty() ? std::string("no file (no HOME or XDG_CACHE_HOME)") : file.string());
  const std::vector<kernels::Choice> choices = kernels::known_choices();
  if (choices.empty())
    fmt::print("  none timed yet (each kernel times both on its first call of a shape class)\n");
  for (const kernels::Choice& c : choices)
    fmt::print("  {} ({}): {} (lathe {:.3f} ms, ATen {:.3f} ms)\n", c.kernel, c.shape_class,
               kernels::side_name(c.side), c.lathe_ms, c.aten_ms);
}

void add_info(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "info", "Print LibTorch, CUDA and cuDNN versions, devices and threads, or a zoo model");
  auto model = std::make_shared<std::string>();
  auto options = std::make_shared<std::vector<std::string>>();
  auto data = std::make_shared<std::string>();
  cmd->add_option("--model", *model, "Zoo model to summarise (e.g. convnet)");
  cmd->add_option("--data", *data,
                  "A run config: load its data and print what it says (task, input signature, "
                  "classes) and the model sizes it fills (--model, else the config's model)");
  cmd->add_option("options", *options,
                  "key=value options of --model (e.g. num_classes=5); with --data alone, "
                  "overrides of the run config (e.g. data.path=...)");
  cmd->callback([=, &exit_code] {
    if (!model->empty() || !data->empty()) {
      config::ModelSection section;
      if (!data->empty()) {
        // With --model the options are that model's; without, overrides of the run config.
        config::RunConfig cfg =
            config::load_config(*data, model->empty() ? *options : std::vector<std::string>{});
        if (!model->empty()) cfg.model = config::parse_model_section(*model, *options);
        setup_threads(cfg.run.threads);
        const run::RunLoaders loaders = run::make_run_loaders(cfg.data, cfg.run.seed);
        for (const auto& line : run::resolve_from_data(cfg, loaders)) fmt::print("{}\n", line);
        section = cfg.model;
      } else {
        section = config::parse_model_section(*model, *options);
      }
      const run::ModelSummary summary = run::summarize_model(section);
      if (data->empty() && !summary.data_sizes.empty())
        fmt::print("sizes from the data (auto; without data the defaults below): {}\n"
                   "(lathe info --data RUN.yaml [--model NAME] prints what a run's data fills)\n",
                   fmt::join(summary.data_sizes, ", "));
      fmt::print("{}\n", summary.module);
      fmt::print("parameters: {}\n", summary.parameters);
      exit_code = kOk;
      return;
    }
    LATHE_CHECK(options->empty(), ConfigError, "lathe info: options ({}) need --model NAME",
                fmt::join(*options, " "));
    setup_threads(0);
    const RuntimeInfo info = runtime_info();
    fmt::print("lathe {}\n", info.lathe_version);
    fmt::print("LibTorch {}\n", info.torch_version);
    fmt::print("CUDA available: {}\n", info.cuda_available ? "yes" : "no");
    fmt::print("cuDNN available: {}{}\n", info.cudnn_available ? "yes" : "no",
               info.cudnn_available ? fmt::format(" (version {})", info.cudnn_version) : "");
    fmt::print("devices: cpu{}{}\n", info.cuda_devices.empty() ? "" : ", ",
               fmt::join(info.cuda_devices, ", "));
    fmt::print("threads: {} intra-op, {} inter-op, {} hardware\n", info.intra_op_threads,
               info.inter_op_threads, info.hardware_threads);
    fmt::print("oneDNN (mkldnn): {}\n", info.mkldnn_available ? "yes" : "no");
    print_kernel_choices();
    exit_code = kOk;
  });
}

void add_export(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "export", "Export a run's (or checkpoint's) model to ONNX, validated, for onnxruntime");
  cmd->footer(
      "Example:\n  lathe export runs/fashion_cnn -o fashion.onnx --dynamic batch --triton\n"
      "  lathe export runs/wine_mlp --preprocess -o wine.onnx   # raw columns in, label out\n"
      "  lathe export runs/fashion_cnn -o fashion_int8.onnx --int8   # static QDQ, calibrated\n"
      "  lathe export runs/smol_lora --hf export/smol_lora   # a Hugging Face folder\n"
      "Opset 17 (IR 8). The file is checked by ONNX's checker and strict shape inference before "
      "it is written (atomically).");
  auto source = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  auto weights = std::make_shared<std::string>();
  auto dynamic = std::make_shared<std::vector<std::string>>();
  auto opset = std::make_shared<int64_t>(17);
  auto fp16 = std::make_shared<bool>(false);
  auto triton = std::make_shared<bool>(false);
  auto preprocess = std::make_shared<bool>(false);
  auto list_ops = std::make_shared<bool>(false);
  auto hf = std::make_shared<std::string>();
  cmd->add_option("run", *source, "A run folder (runs/<name>) or a checkpoint folder");
  cmd->add_option("--hf", *hf,
                  "Write a Hugging Face folder instead of ONNX (llama, gpt2 language models: "
                  "config.json, model.safetensors, generation_config.json, tokenizer files)");
  cmd->add_option("-o,--output", *output, "The .onnx file (default: <run>/model.onnx)");
  cmd->add_option("--opset", *opset, "ONNX opset (17)");
  cmd->add_option("--dynamic", *dynamic,
                  "Dynamic axes, comma-separated: batch,seq (the default); height,width for CNNs "
                  "that take any image size (resnet*, mobilenet_v2); 'none' fixes all")
      ->delimiter(',');
  cmd->add_flag("--fp16", *fp16, "Float16 weights and compute (float32 inputs and outputs)");
  cmd->add_flag("--triton", *triton,
                "Also write a Triton model repository (<output folder>/triton/<run name>/)");
  cmd->add_flag("--preprocess", *preprocess,
                "The run's preprocessing inside the graph: images as uint8 pixels [batch, H, W, C] "
                "at the run's side; tables as one input per raw column (float, NaN = missing; "
                "string for categories); classification adds outputs label and probabilities");
  cmd->add_option("--weights", *weights,
                  "Weights to export instead of the run's own: a file, or 'ema' for the run's "
                  "(or checkpoint's) model_ema.safetensors (trainer.ema)");
  auto int8 = std::make_shared<std::string>();
  auto* int8_opt =
      cmd->add_option("--int8", *int8,
                      "Int8 quantization: auto (the default: static QDQ calibrated on training "
                      "batches for models with convolutions, dynamic otherwise), dynamic or static")
          ->expected(0, 1);
  auto calibration = std::make_shared<int64_t>(8);
  cmd->add_option("--calibration-batches", *calibration,
                  "Static int8: training batches to calibrate on (8)");
  cmd->add_flag("--list-ops", *list_ops, "Print the ATen operations the exporter translates");
  cmd->callback([=, &exit_code] {
    if (*list_ops) {
      for (const auto& op : onnx::supported_operations()) fmt::print("{}\n", op);
      exit_code = kOk;
      return;
    }
    if (!hf->empty()) {
      LATHE_CHECK(!source->empty(), ConfigError, "lathe export: give a run folder");
      const run::HfExport r = run::export_hf(*source, *hf, *weights);
      log::info("wrote {}: {}", r.folder.string(), fmt::join(r.files, ", "));
      exit_code = kOk;
      return;
    }
    run::RunExportOptions o;
    if (int8_opt->count() > 0) {
      o.int8 = onnx::int8_mode_from_name(int8->empty() ? "auto" : *int8);
    }
    LATHE_CHECK(!source->empty(), ConfigError, "lathe export: give a run or checkpoint folder");
    o.output = *output;
    o.opset = *opset;
    o.fp16 = *fp16;
    o.triton = *triton;
    o.preprocess = *preprocess;
    o.weights = *weights;
    o.calibration_batches = *calibration;
    if (!dynamic->empty()) {
      o.dynamic = *dynamic;
      if (o.dynamic == std::vector<std::string>{"none"}) o.dynamic.clear();
    }
    const Doing doing(fmt::format("exporting {}", *source));
    const onnx::ExportReport r = run::export_run(*source, o);
    const auto io_text = [](const std::vector<onnx::ExportReport::Io>& ios) {
      std::vector<std::string> parts;
      for (const auto& io : ios) {
        parts.push_back(fmt::format("{} {}[{}]", io.name, io.dtype, fmt::join(io.shape, ", ")));
      }
      return fmt::format("{}", fmt::join(parts, "; "));
    };
    log::info("wrote {} ({} nodes, {} initializers, {:.3f} MB): inputs {} -> outputs {}",
              r.path.string(), r.nodes, r.initializers, static_cast<double>(r.bytes) / 1e6,
              io_text(r.inputs), io_text(r.outputs));
    if (!r.quantization.empty()) log::info("{}", r.quantization);
    exit_code = kOk;
  });
}

void add_runs(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("runs", "List the runs under a folder, or compare two of them");
  cmd->footer(
      "Examples:\n  lathe runs --sort best --filter model.name=convnet\n"
      "  lathe runs --filter status=killed --json\n  lathe runs --diff runs/a runs/b\n"
      "Keys for --sort and --filter: name, model, data, task, status, resumable, epochs, steps, "
      "monitor, best, wall, started, test.<metric> (test.accuracy), or any config key "
      "(optim.lr). Metric keys sort best first.");
  auto dir = std::make_shared<std::string>("runs");
  auto sort = std::make_shared<std::string>();
  auto filters = std::make_shared<std::vector<std::string>>();
  auto diff = std::make_shared<std::vector<std::string>>();
  auto json = std::make_shared<bool>(false);
  auto reverse = std::make_shared<bool>(false);
  cmd->add_option("dir", *dir, "Folder holding the run folders (default: runs)");
  cmd->add_option("--sort", *sort, "Order by this key (default: start time)");
  cmd->add_flag("--reverse", *reverse, "Reverse the order");
  cmd->add_option("--filter", *filters, "Keep runs whose KEY equals VALUE (key=value; repeatable)")
      ->allow_extra_args(false);
  cmd->add_option("--diff", *diff, "Compare two run folders: the config keys that differ and "
                                   "the metric deltas")
      ->expected(2);
  cmd->add_flag("--json", *json, "Print JSON instead of a table");
  cmd->callback([=, &exit_code] {
    if (!diff->empty()) {
      const auto a = run::summarize_run((*diff)[0]), b = run::summarize_run((*diff)[1]);
      for (const auto* r : {&a, &b})
        LATHE_CHECK(r->status != "unreadable", DataError, "lathe runs --diff: {}: {}",
                    r->dir.string(), r->detail);
      const auto d = run::diff_runs(a, b);
      fmt::print("{}", *json ? run::diff_json(a, b, d) : run::format_diff(a, b, d));
      exit_code = kOk;
      return;
    }
    auto runs = run::list_runs(*dir);
    run::filter_runs(runs, *filters);
    if (!sort->empty()) run::sort_runs(runs, *sort, *reverse);
    else if (*reverse) std::reverse(runs.begin(), runs.end());
    fmt::print("{}", *json ? run::runs_json(runs) : run::format_runs_table(runs));
    exit_code = kOk;
  });
}

void add_report(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "report", "Write a run's report: one self-contained HTML page with its curves and results");
  auto run_dir = std::make_shared<std::string>();
  auto output = std::make_shared<std::string>();
  cmd->add_option("run", *run_dir, "Run folder (runs/<name>)")->required();
  cmd->add_option("-o,--output", *output, "The HTML file (default: <run>/report.html)");
  cmd->callback([=, &exit_code] {
    const Doing doing(fmt::format("writing the report of {}", *run_dir));
    const auto file = run::write_report(*run_dir, *output);
    log::info("wrote {}", file.string());
    exit_code = kOk;
  });
}

}  // namespace

void add_commands(CLI::App& app, int& exit_code) {
  add_train(app, exit_code);
  add_eval(app, exit_code);
  add_sweep(app, exit_code);
  add_info(app, exit_code);
  add_export(app, exit_code);
  add_runs(app, exit_code);
  add_report(app, exit_code);
  add_serve_commands(app, exit_code);
}

}  // namespace lathe::cli
