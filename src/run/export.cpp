// `lathe export`: a finished run or checkpoint → its zoo model with weights, at the sizes it
// trained at → ONNX (+ Triton).
#include "lathe/run/export.h"

#include <fstream>
#include <set>
#include <sstream>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/nn/modules/container/any.h>

#include "lathe/ckpt/torch_pickle.h"
#include "lathe/data/tabular.h"
#include "lathe/onnx/estimators.h"
#include "lathe/config/config.h"
#include "lathe/run/run.h"
#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/run/mlflow.h"
#include "models/registry.h"
#include "models/signature.h"
#include "src/run/export_preprocess.h"
#include "src/run/run_files.h"

namespace lathe::run {
namespace {

using detail::read_text;

/// The run's config text and where it came from: <dir>/config.yaml (a run folder) or the
/// "config" entry of <dir>/state.json (a checkpoint folder).
std::pair<std::string, std::string> find_config(const std::filesystem::path& dir) {
  if (std::filesystem::exists(dir / "config.yaml")) {
    return {read_text(dir / "config.yaml"), (dir / "config.yaml").string()};
  }
  if (std::filesystem::exists(dir / "state.json")) {
    const auto state = nlohmann::json::parse(read_text(dir / "state.json"), nullptr, false);
    LATHE_CHECK(!state.is_discarded() && state.contains("config"), CheckpointError,
                "{}: not a lathe checkpoint state (no config entry)", (dir / "state.json").string());
    return {state["config"].get<std::string>(), (dir / "state.json").string()};
  }
  throw ExportError(fmt::format(
      "{}: neither a run folder (config.yaml) nor a checkpoint folder (state.json); pass "
      "runs/<name> or runs/<name>/checkpoints/<step>",
      dir.string()));
}

std::string join(const std::vector<double>& v) {
  return fmt::format("{}", fmt::join(v, ","));
}

/// The sizes the run trained at, from its resolved config: the image side (data.image_size, or
/// the image_folder source's 224) and the text length; a run without them (made before sizes
/// were resolved) of an idx source is an ExportError saying what to do.
models::SignatureSizes run_sizes(const config::RunConfig& cfg) {
  models::SignatureSizes sizes;
  switch (config::source_spec(cfg.data.source).kind) {
    case config::SourceKind::idx:
      LATHE_CHECK(cfg.data.image_size > 0, ExportError,
                  "{}: data.image_size is not in the run's config (a run made before lathe "
                  "recorded it); add data.image_size: 28 (or the side it trained at) to it",
                  cfg.source);
      sizes.side = cfg.data.image_size;
      break;
    case config::SourceKind::image_folder:
      sizes.side = cfg.data.image_size > 0 ? cfg.data.image_size : 224;  // the source's default
      break;
    case config::SourceKind::text: sizes.seq_len = cfg.data.seq_len; break;
    case config::SourceKind::text_csv: sizes.seq_len = cfg.data.max_length; break;
    case config::SourceKind::csv: break;  // the feature count is model.in_features
  }
  return sizes;
}

/// The first `count` training batches of the run's data (epoch 0's order), as the forward's inputs.
std::vector<std::vector<at::Tensor>> calibration_batches(const config::RunConfig& cfg,
                                                         const models::ModelSignature& sig,
                                                         int64_t count) {
  LATHE_CHECK(sig.inputs.size() == 1, ConfigError,
              "--int8 static: calibration feeds the run's training batches, which hold one "
              "input, and model {} takes {} ({}); use --int8 dynamic",
              cfg.model.name, sig.inputs.size(), sig.inputs.front().name);
  RunLoaders data = make_run_loaders(cfg.data, cfg.run.seed);
  LATHE_CHECK(data.train && data.train->num_batches() > 0, DataError,
              "{}: the training split is empty; int8 calibration needs its batches",
              cfg.data.path);
  data.train->set_epoch(0);
  std::vector<std::vector<at::Tensor>> batches;
  for (int64_t i = 0; i < std::min(count, data.train->num_batches()); ++i) {
    batches.push_back({data.train->batch(i).inputs});
  }
  log::info("int8: calibrating on {} training batches", batches.size());
  return batches;
}

/// A zoo (torch) model's run: its weights in the model, traced at the run's sizes.
onnx::ExportReport export_network(const std::filesystem::path& dir, const config::RunConfig& cfg,
                                  const RunExportOptions& options, onnx::ExportOptions eo,
                                  const std::filesystem::path& output) {
  torch::nn::AnyModule model = models::build_model(cfg.model);
  const std::filesystem::path weights = weights_file(dir, options.weights);
  LATHE_CHECK(std::filesystem::exists(weights), ExportError,
              "{}: no weights here (model.safetensors); train the run first or pass --weights",
              weights.string());
  ckpt::load_weights_any(*model.ptr(), weights, /*strict=*/true);

  const models::ModelSignature sig =
      models::model_signature(cfg.model, *model.ptr(), run_sizes(cfg));
  eo.fp16 = options.fp16;
  std::set<std::string> offered;  // the symbols this model's inputs have
  for (const auto& in : sig.inputs) {
    onnx::InputSpec spec{in.name, {}};
    for (const auto& [axis, symbol] : in.dynamic) {
      offered.insert(symbol);
      if (std::find(options.dynamic.begin(), options.dynamic.end(), symbol) !=
          options.dynamic.end()) {
        spec.dynamic_axes[axis] = symbol;
      }
    }
    eo.inputs.push_back(spec);
  }
  const bool defaults = options.dynamic == RunExportOptions{}.dynamic;
  for (const auto& d : options.dynamic) {
    LATHE_CHECK(d == "batch" || d == "seq" || d == "height" || d == "width", ConfigError,
                "--dynamic: unknown axis '{}'; the axes are batch, seq, height and width", d);
    LATHE_CHECK(defaults || offered.count(d), ConfigError,
                "--dynamic {}: model {} takes no other {} (its inputs' dynamic axes: {})", d,
                cfg.model.name, d, fmt::join(offered, ", "));
  }
  // A tabular model's output is logits for classification, a prediction for regression.
  std::string output_name = sig.output;
  if (output_name == "output") {
    output_name = cfg.task.kind == "regression" ? "prediction" : "logits";
  }
  eo.output_names = {output_name};

  eo.int8 = options.int8;
  if (options.int8 != onnx::Int8Mode::none) {
    LATHE_CHECK(options.calibration_batches > 0, ConfigError,
                "--calibration-batches {}: give at least 1", options.calibration_batches);
    eo.calibration_source = fmt::format("the training split of {}", dir.string());
    eo.calibration = [&] { return calibration_batches(cfg, sig, options.calibration_batches); };
  }
  const std::vector<at::Tensor> examples = models::example_inputs(sig, cfg.run.seed);
  return onnx::export_model(model, examples, output, eo);
}

/// The ONNX graph of each estimator kind, by its name in the model table (models/registry.h):
/// the reader of the model file the kind keeps, and the type --preprocess gives numeric columns
/// (double for trees: their thresholds are training values, and a cell rounded to float32 can
/// land on the other side of one). An estimator kind missing here is an ExportError naming it.
struct EstimatorExport {
  const char* model;
  onnx::Model (*graph)(const std::filesystem::path&, int64_t);
  onnx::DType numeric;
};
constexpr EstimatorExport kEstimatorExports[] = {
    {"xgboost", onnx::xgboost_graph, onnx::DType::Double},
    {"random_forest", onnx::xgboost_graph, onnx::DType::Double},
    {"svm", onnx::libsvm_graph, onnx::DType::Float},
};

/// The table's entry for an estimator run's model.
const EstimatorExport& estimator_export(const std::filesystem::path& dir,
                                        const config::RunConfig& cfg) {
  std::vector<std::string> exported;
  for (const auto& e : kEstimatorExports) {
    if (cfg.model.name == e.model) return e;
    exported.emplace_back(e.model);
  }
  throw ExportError(
      fmt::format("{}: model '{}' is an estimator lathe has no ONNX graph for (exported: {})",
                  dir.string(), cfg.model.name, fmt::join(exported, ", ")));
}

/// An estimator run (xgboost, random_forest, svm): its model file, in the library's format, read
/// into an ai.onnx.ml graph over the run's preprocessed features (lathe/onnx/estimators.h).
onnx::ExportReport export_estimator(const std::filesystem::path& dir,
                                    const config::RunConfig& cfg, const models::Estimator& est,
                                    const EstimatorExport& entry,
                                    const std::filesystem::path& preprocessing,
                                    const RunExportOptions& options, const onnx::ExportOptions& eo,
                                    const std::filesystem::path& output) {  LATHE_CHECK(!options.fp16 && options.int8 == onnx::Int8Mode::none, ConfigError,
              "--fp16 / --int8 rewrite a network's weights; the {} model is exported as it is "
              "(its ai.onnx.ml operator computes in float32): drop the flag",
              cfg.model.name);
  const bool defaults = options.dynamic == RunExportOptions{}.dynamic;
  LATHE_CHECK(defaults || options.dynamic == std::vector<std::string>{"batch"}, ConfigError,
              "--dynamic {}: the {} model's only dynamic axis is batch, which its graph always has",
              fmt::join(options.dynamic, ","), cfg.model.name);
  LATHE_CHECK(options.weights != "ema", ConfigError,
              "--weights ema: a {} run has no EMA weights; its model is {}", cfg.model.name,
              est.file_name());
  const std::filesystem::path file =
      options.weights.empty() ? dir / est.file_name() : options.weights;
  LATHE_CHECK(std::filesystem::exists(file), ExportError,
              "{}: no model here ({}); train the run first or pass --weights FILE",
              file.string(), est.file_name());
  // The features the model was fitted on: the run's preprocessing makes them.
  const int64_t features =
      preprocessing.empty() ? 0 : data::TabularPreprocessor::load(preprocessing).num_features();
  return onnx::write_model(entry.graph(file, features), output, eo);
}

}  // namespace

onnx::ExportReport export_run(const std::filesystem::path& run_or_checkpoint,
                        const RunExportOptions& options) {
  LATHE_CHECK(std::filesystem::is_directory(run_or_checkpoint), ExportError,
              "{}: no such folder; pass a run folder (runs/<name>) or a checkpoint folder",
              run_or_checkpoint.string());
  // A checkpoints/last or best link resolves to its step folder.
  const std::filesystem::path dir = std::filesystem::canonical(run_or_checkpoint);
  const auto [config_text, config_origin] = find_config(dir);
  const config::RunConfig cfg = config::parse_config(config_text, config_origin);

  onnx::ExportOptions eo;
  eo.opset = options.opset;
  eo.doc_string = fmt::format("{} trained by lathe (run '{}')", cfg.model.name, cfg.run.name);
  eo.metadata.emplace_back("model", cfg.model.name);
  eo.metadata.emplace_back("run_name", cfg.run.name);
  eo.metadata.emplace_back("run_config", config_text);
  eo.metadata.emplace_back("task", cfg.task.kind);
  if (!cfg.data.mean.empty()) {
    eo.metadata.emplace_back("normalize_mean", join(cfg.data.mean));
    eo.metadata.emplace_back("normalize_std", join(cfg.data.std));
  }
  // The run's class names and tabular preprocessing live in the run folder (a checkpoint's run
  // folder is two levels up).
  const auto run_file = [&](const char* name) -> std::filesystem::path {
    for (const auto& f : {dir / name, dir.parent_path().parent_path() / name}) {
      if (std::filesystem::exists(f)) return f;
    }
    return {};
  };
  if (const auto pre = run_file("preprocessing.json"); !pre.empty()) {
    eo.metadata.emplace_back("preprocessing", read_text(pre));
  }
  std::vector<std::string> class_names;
  if (const auto classes = run_file("classes.txt"); !classes.empty()) {
    std::istringstream lines(read_text(classes));
    for (std::string line; std::getline(lines, line);) {
      if (!line.empty()) class_names.push_back(line);
    }
    eo.metadata.emplace_back("class_names", nlohmann::json(class_names).dump());
  }
  // A model a library fits (xgboost, random_forest, svm) or a zoo network.
  const std::shared_ptr<models::Estimator> estimator = models::make_estimator(cfg.model);
  const EstimatorExport* entry = estimator ? &estimator_export(dir, cfg) : nullptr;
  if (options.preprocess) {
    detail::RunPreprocessing prep{dir.string(), run_file("preprocessing.json"), class_names};
    if (entry != nullptr) prep.numeric = entry->numeric;
    eo.graph_passes.push_back(detail::preprocessing_pass(cfg, prep));
    eo.metadata.emplace_back("preprocessing_in_graph", "true");
  }
  const std::filesystem::path output =
      options.output.empty() ? dir / "model.onnx" : options.output;
  const onnx::ExportReport report =
      entry != nullptr ? export_estimator(dir, cfg, *estimator, *entry,
                                          run_file("preprocessing.json"), options, eo, output)
                       : export_network(dir, cfg, options, std::move(eo), output);
  if (options.triton) {
    const auto repo = output.parent_path() / "triton";
    const auto entry = onnx::write_triton_repository(report, repo, cfg.run.name);
    log::info("Triton model repository: {}", entry.string());
  }
  log_artifact_to_tracked_run(dir, output);  // a run tracked with trainer.mlflow gets the model
  return report;
}

}  // namespace lathe::run
