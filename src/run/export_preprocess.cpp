// `lathe export --preprocess`: a run's preprocessing as ONNX nodes in front of its traced model
// (raw pixels, or raw table columns, in) and its class names after it (label, probabilities out).
#include "src/run/export_preprocess.h"

#include <algorithm>
#include <memory>
#include <set>
#include <utility>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "lathe/core/error.h"
#include "lathe/data/csv.h"
#include "lathe/data/tabular.h"

namespace lathe::run::detail {
namespace {

using onnx::Attribute;
using onnx::Dim;
using onnx::DType;
using onnx::ValueInfo;

constexpr const char* kMl = "ai.onnx.ml";

/// Collects the nodes and constants of one side of the model. Every value it makes is named
/// under `prefix` ("preprocess/", "postprocess/"), which the translator never uses.
class Nodes {
 public:
  Nodes(onnx::Graph& graph, std::string prefix) : graph_(graph), prefix_(std::move(prefix)) {}

  /// A name in this side's namespace.
  std::string value(const std::string& name) const { return prefix_ + name; }

  /// An initializer of `values` (row-major, little-endian) with `dims`; returns its name.
  template <class T>
  std::string constant(const std::string& name, DType dtype, const std::vector<T>& values,
                       std::vector<int64_t> dims) {
    onnx::TensorData t;
    t.name = value(name);
    t.dtype = dtype;
    t.dims = std::move(dims);
    t.raw.assign(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
    graph_.initializers.push_back(std::move(t));
    return graph_.initializers.back().name;
  }
  std::string scalar(const std::string& name, double v) {
    return constant(name, DType::Double, std::vector<double>{v}, {});
  }

  /// op(inputs) -> output (a full name); returns the output.
  std::string add(const std::string& op, std::vector<std::string> inputs, std::string output,
                  std::vector<Attribute> attributes = {}, const char* domain = "") {
    onnx::Node n;
    n.op_type = op;
    n.inputs = std::move(inputs);
    n.outputs = {output};
    n.attributes = std::move(attributes);
    n.name = prefix_ + op + "/" + output;
    n.domain = domain;
    nodes_.push_back(std::move(n));
    return output;
  }

  std::vector<onnx::Node>& nodes() { return nodes_; }

 private:
  onnx::Graph& graph_;
  std::string prefix_;
  std::vector<onnx::Node> nodes_;
};

void use_ml_domain(onnx::Model& m) {
  for (const auto& [domain, version] : m.domain_opsets)
    if (domain == kMl) return;
  m.domain_opsets.emplace_back(kMl, 3);
}

/// The model's one input, which the preprocessing will compute instead of taking it.
ValueInfo take_single_input(onnx::Model& m, const std::string& run) {
  LATHE_CHECK(m.graph.inputs.size() == 1, ExportError,
              "{}: --preprocess expects a model with one input, this one has {}", run,
              m.graph.inputs.size());
  ValueInfo in = m.graph.inputs.front();
  m.graph.inputs.clear();
  return in;
}

void prepend(onnx::Model& m, Nodes& n) {
  m.graph.nodes.insert(m.graph.nodes.begin(), n.nodes().begin(), n.nodes().end());
}

// ---- images: uint8 NHWC pixels -> the normalised NCHW floats the model trained on ----------

void image_preprocessing(onnx::Model& m, const config::DataSection& d, const std::string& run) {
  const ValueInfo images = take_single_input(m, run);  // float [batch, C, H, W]
  LATHE_CHECK(images.shape.size() == 4 && !d.mean.empty() && d.mean.size() == d.std.size(),
              ExportError,
              "{}: --preprocess needs the run's image input (batch, C, H, W) and its "
              "data.mean / data.std (the resolved config.yaml has {} mean and {} std values)",
              run, d.mean.size(), d.std.size());
  const auto& s = images.shape;
  m.graph.inputs.push_back({"pixels", DType::UInt8, {s[0], s[2], s[3], s[1]}});
  Nodes n(m.graph, "preprocess/");
  const auto c = static_cast<int64_t>(d.mean.size());  // one per channel, or one for all
  const std::vector<float> mean(d.mean.begin(), d.mean.end()), std(d.std.begin(), d.std.end());
  std::string x = n.add("Cast", {"pixels"}, n.value("pixels_float"),
                        {{"to", static_cast<int64_t>(DType::Float)}});
  x = n.add("Transpose", {x}, n.value("nchw"), {{"perm", std::vector<int64_t>{0, 3, 1, 2}}});
  x = n.add("Div", {x, n.constant("255", DType::Float, std::vector<float>{255.0f}, {})},
            n.value("unit"));  // (B, C, H, W) in [0, 1]
  x = n.add("Sub", {x, n.constant("mean", DType::Float, mean, {1, c, 1, 1})}, n.value("centred"));
  n.add("Div", {x, n.constant("std", DType::Float, std, {1, c, 1, 1})}, images.name);
  prepend(m, n);
}

// ---- tables: one raw input per column -> the features the model trained on ------------------

/// The names already in the graph (inputs, outputs, initializers, node outputs).
std::set<std::string> graph_names(const onnx::Graph& g) {
  std::set<std::string> names;
  for (const auto& v : g.inputs) names.insert(v.name);
  for (const auto& v : g.outputs) names.insert(v.name);
  for (const auto& t : g.initializers) names.insert(t.name);
  for (const auto& node : g.nodes) names.insert(node.outputs.begin(), node.outputs.end());
  return names;
}

bool imputes(const std::string& impute) { return impute != "none" && impute != "drop"; }

/// A numeric column: float [B, 1] (NaN = missing) -> its scaled feature, float [B, 1]. The
/// arithmetic is in double, as TabularPreprocessor::transform does it.
std::string numeric_column(Nodes& n, const data::TabularPreprocessor::Column& col, int64_t k) {
  const std::string p = fmt::format("{}.{}/", k, col.name);
  std::string x = n.add("Cast", {col.name}, n.value(p + "double"),
                        {{"to", static_cast<int64_t>(DType::Double)}});
  if (imputes(col.steps.impute)) {
    const std::string nan = n.add("IsNaN", {x}, n.value(p + "missing"));
    x = n.add("Where", {nan, n.scalar(p + "fill", col.fill_number), x}, n.value(p + "imputed"));
  }
  if (col.steps.outliers != "none")
    x = n.add("Clip",
              {x, n.scalar(p + "clip_lo", col.clip_lo), n.scalar(p + "clip_hi", col.clip_hi)},
              n.value(p + "clipped"));
  if (col.steps.scale != "none") {
    x = n.add("Sub", {x, n.scalar(p + "shift", col.shift)}, n.value(p + "shifted"));
    x = n.add("Div", {x, n.scalar(p + "divide", col.divide)}, n.value(p + "scaled"));
  }
  return n.add("Cast", {x}, n.value(p + "feature"), {{"to", static_cast<int64_t>(DType::Float)}});
}

/// A categorical column: string [B, 1] -> its one-hot features float [B, K] (all zeros for a
/// category the training rows lack) or its label id float [B, 1] (-1 for one they lack). The
/// cells lathe reads as missing map to the fitted fill category when the column imputes.
std::string categorical_column(Nodes& n, const data::TabularPreprocessor::Column& col, int64_t k) {
  const std::string p = fmt::format("{}.{}/", k, col.name);
  const auto& cats = col.categories;
  std::vector<std::string> keys = cats;
  std::vector<int64_t> ids(cats.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  const auto fill = std::lower_bound(cats.begin(), cats.end(), col.fill_category);
  if (imputes(col.steps.impute) && fill != cats.end() && *fill == col.fill_category) {
    for (const auto& token : data::CsvOptions{}.missing) {
      if (std::binary_search(cats.begin(), cats.end(), token)) continue;
      keys.push_back(token);
      ids.push_back(fill - cats.begin());
    }
  }
  if (col.steps.encode == "label") {
    const std::vector<float> values(ids.begin(), ids.end());
    return n.add("LabelEncoder", {col.name}, n.value(p + "feature"),
                 {{"keys_strings", keys}, {"values_floats", values}, {"default_float", -1.0f}},
                 kMl);
  }
  const std::string id =
      n.add("LabelEncoder", {col.name}, n.value(p + "id"),
            {{"keys_strings", keys}, {"values_int64s", ids}, {"default_int64", int64_t{-1}}},
            kMl);  // (B, 1), -1 = unseen
  std::vector<int64_t> range(cats.size());
  for (size_t i = 0; i < range.size(); ++i) range[i] = static_cast<int64_t>(i);
  const std::string hot =
      n.add("Equal",
            {id, n.constant(p + "ids", DType::Int64, range, {static_cast<int64_t>(cats.size())})},
            n.value(p + "is_category"));  // (B, K)
  return n.add("Cast", {hot}, n.value(p + "feature"), {{"to", static_cast<int64_t>(DType::Float)}});
}

void table_preprocessing(onnx::Model& m, const data::TabularPreprocessor& prep,
                         const std::string& origin, const std::string& run, DType numeric) {
  const std::set<std::string> taken = graph_names(m.graph);
  const ValueInfo features = take_single_input(m, run);  // float [batch, F]
  const int64_t width =
      features.shape.size() == 2 && std::holds_alternative<int64_t>(features.shape[1])
          ? std::get<int64_t>(features.shape[1])
          : -1;
  LATHE_CHECK(width == prep.num_features(), ExportError,
              "{}: the model takes {} features but {} makes {}; export the run whose "
              "preprocessing.json this is",
              run, width, origin, prep.num_features());
  const Dim batch = features.shape[0];
  Nodes n(m.graph, "preprocess/");
  std::vector<std::string> parts;
  int64_t k = 0;
  for (const auto& col : prep.columns()) {
    LATHE_CHECK(!taken.count(col.name) && col.name != "label" && col.name != "probabilities",
                ExportError,
                "{}: column '{}' would be a graph input named like a value the model's graph "
                "already has; rename the column in the training CSV and retrain, or export "
                "without --preprocess",
                origin, col.name);
    m.graph.inputs.push_back({col.name, col.numeric ? numeric : DType::String, {batch, 1}});
    parts.push_back(col.numeric ? numeric_column(n, col, k) : categorical_column(n, col, k));
    ++k;
  }
  n.add("Concat", parts, features.name, {{"axis", int64_t{1}}});  // (B, F) in feature order
  prepend(m, n);
  use_ml_domain(m);
}

// ---- classification: class names and probabilities after the logits -------------------------

/// The size of `v`'s axis 1, -1 when it is not fixed.
int64_t width(const ValueInfo& v) {
  return v.shape.size() == 2 && std::holds_alternative<int64_t>(v.shape[1])
             ? std::get<int64_t>(v.shape[1])
             : -1;
}

/// An estimator's graph (lathe/onnx/estimators.h) decides the class itself: its `class_id`
/// becomes the class name `label`; its probabilities or decision values stay as they are.
void estimator_label_output(onnx::Model& m, const std::vector<std::string>& classes,
                            const std::string& run) {
  const auto k = static_cast<int64_t>(classes.size());
  for (const ValueInfo& out : m.graph.outputs) {
    const int64_t expected = out.name == "probabilities"     ? k
                             : out.name == "decision_values" ? std::max<int64_t>(1, k * (k - 1) / 2)
                                                             : width(out);
    LATHE_CHECK(width(out) == expected, ExportError,
                "{}: the model's {} has {} columns but classes.txt names {} classes", run,
                out.name, width(out), k);
  }
  Nodes n(m.graph, "postprocess/");
  std::vector<int64_t> ids(classes.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  n.add("LabelEncoder", {"class_id"}, "label",
        {{"keys_int64s", ids}, {"values_strings", classes}, {"default_string", std::string()}},
        kMl);
  m.graph.nodes.insert(m.graph.nodes.end(), n.nodes().begin(), n.nodes().end());
  for (ValueInfo& out : m.graph.outputs)
    if (out.name == "class_id") out = {"label", DType::String, out.shape};
}

void label_outputs(onnx::Model& m, const std::vector<std::string>& classes,
                   const std::string& run) {
  for (const ValueInfo& out : m.graph.outputs)
    if (out.name == "class_id") return estimator_label_output(m, classes, run);
  const ValueInfo logits = m.graph.outputs.front();  // float [batch, K]
  const int64_t K = logits.shape.size() == 2 && std::holds_alternative<int64_t>(logits.shape[1])
                        ? std::get<int64_t>(logits.shape[1])
                        : -1;
  LATHE_CHECK(K == static_cast<int64_t>(classes.size()), ExportError,
              "{}: the model gives {} outputs per record but classes.txt names {} classes", run, K,
              classes.size());
  Nodes n(m.graph, "postprocess/");
  n.add("Softmax", {logits.name}, "probabilities", {{"axis", int64_t{1}}});
  const std::string id = n.add("ArgMax", {logits.name}, n.value("class_id"),
                               {{"axis", int64_t{1}}, {"keepdims", int64_t{0}}});  // (B)
  std::vector<int64_t> ids(classes.size());
  for (size_t i = 0; i < ids.size(); ++i) ids[i] = static_cast<int64_t>(i);
  n.add("LabelEncoder", {id}, "label",
        {{"keys_int64s", ids}, {"values_strings", classes}, {"default_string", std::string()}},
        kMl);
  m.graph.nodes.insert(m.graph.nodes.end(), n.nodes().begin(), n.nodes().end());
  m.graph.outputs.insert(m.graph.outputs.begin(), {{"label", DType::String, {logits.shape[0]}},
                                                   {"probabilities", DType::Float, logits.shape}});
  use_ml_domain(m);
}

}  // namespace

std::function<void(onnx::Model&)> preprocessing_pass(const config::RunConfig& cfg,
                                                     const RunPreprocessing& run) {
  const config::DataSection& d = cfg.data;
  const auto kind = config::source_spec(d.source).kind;
  LATHE_CHECK(kind != config::SourceKind::text_csv, ConfigError,
              "{}: --preprocess does not apply to a text run (data.source text_csv): the graph "
              "would have to split the text into WordPiece tokens of the run's vocabulary, and "
              "ONNX has no tokenizer operator in the standard or ai.onnx.ml domains; export "
              "without --preprocess and feed input_ids / attention_mask (lathe predict tokenizes "
              "texts with the run's vocabulary)",
              run.run);
  LATHE_CHECK(kind != config::SourceKind::text, ConfigError,
              "{}: --preprocess does not apply to a language-model run (data.source text): its "
              "input is token ids, and ONNX has no operator turning text into them; export "
              "without --preprocess and feed input_ids (lathe generate samples from the run)",
              run.run);
  std::vector<std::string> classes;
  if (cfg.task.kind == "classification") {
    LATHE_CHECK(!run.classes.empty(), ExportError,
                "{}: classes.txt is missing or empty; --preprocess names the classes in the "
                "graph's label output (retrain, or write one name per line in class-id order)",
                run.run);
    classes = run.classes;
  }
  if (kind == config::SourceKind::csv) {
    LATHE_CHECK(!run.tabular.empty() && std::filesystem::exists(run.tabular), ExportError,
                "{}: no preprocessing.json; a csv run writes its fitted preprocessing there, "
                "which --preprocess puts in the graph (retrain the run)",
                run.run);
    const auto prep =
        std::make_shared<data::TabularPreprocessor>(data::TabularPreprocessor::load(run.tabular));
    return [prep, classes, run](onnx::Model& m) {
      table_preprocessing(m, *prep, run.tabular.string(), run.run, run.numeric);
      if (!classes.empty()) label_outputs(m, classes, run.run);
    };
  }
  return [d, classes, run](onnx::Model& m) {  // idx, image_folder
    image_preprocessing(m, d, run.run);
    if (!classes.empty()) label_outputs(m, classes, run.run);
  };
}

}  // namespace lathe::run::detail
