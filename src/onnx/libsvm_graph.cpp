// A LIBSVM model file (svm_save_model's text format, model.libsvm) → an ai.onnx.ml
// SVMClassifier or SVMRegressor over the `features` input.
#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cmath>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "lathe/core/error.h"
#include "lathe/onnx/estimators.h"
#include "src/onnx/estimator_graph.h"

namespace lathe::onnx {
namespace {

/// LIBSVM's svm_type names lathe exports, and whether they classify.
constexpr std::pair<const char*, bool> kSvmTypes[] = {
    {"c_svc", true}, {"nu_svc", true}, {"epsilon_svr", false}, {"nu_svr", false}};
/// LIBSVM's kernel_type names → ONNX's.
constexpr std::pair<const char*, const char*> kKernels[] = {
    {"linear", "LINEAR"}, {"polynomial", "POLY"}, {"rbf", "RBF"}, {"sigmoid", "SIGMOID"}};

class Reader {
 public:
  explicit Reader(std::filesystem::path file) : file_(std::move(file)) {}

  [[noreturn]] void fail(size_t line, const std::string& what) const {
    throw ExportError(fmt::format(
        "{}{}: {}; lathe exports the text model LIBSVM's svm_save_model writes (model.libsvm of "
        "an svm run)",
        file_.string(), line > 0 ? fmt::format(":{}", line) : "", what));
  }

  double number(const std::string& token, size_t line, const std::string& what) const {
    size_t used = 0;
    double x = 0;
    try {
      x = std::stod(token, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != token.size() || !std::isfinite(x))
      fail(line, fmt::format("{} '{}' is not a finite number", what, token));
    return x;
  }

  int64_t integer(const std::string& token, size_t line, const std::string& what) const {
    const double x = number(token, line, what);
    if (x != std::floor(x) || std::abs(x) > 1e15)
      fail(line, fmt::format("{} '{}' is not an integer", what, token));
    return static_cast<int64_t>(x);
  }

 private:
  std::filesystem::path file_;
};

std::vector<std::string> split(const std::string& line) {
  std::vector<std::string> out;
  std::istringstream in(line);
  for (std::string t; in >> t;) out.push_back(t);
  return out;
}

}  // namespace

Model libsvm_graph(const std::filesystem::path& model_libsvm, int64_t num_features) {
  const Reader r(model_libsvm);
  std::ifstream in(model_libsvm, std::ios::binary);
  if (!in) r.fail(0, "cannot be read");

  // The header: "key values..." lines up to "SV".
  std::map<std::string, std::vector<std::string>> header;
  std::map<std::string, size_t> header_line;
  size_t line_no = 0;
  std::string line;
  bool saw_sv = false;
  while (std::getline(in, line)) {
    ++line_no;
    const auto tokens = split(line);
    if (tokens.empty()) continue;
    if (tokens[0] == "SV" && tokens.size() == 1) {
      saw_sv = true;
      break;
    }
    static const std::set<std::string> keys = {
        "svm_type", "kernel_type", "degree", "gamma", "coef0", "nr_class",          "total_sv",
        "rho",      "label",       "probA",  "probB", "nr_sv", "prob_density_marks"};
    if (!keys.count(tokens[0]))
      r.fail(line_no, fmt::format("unknown header key '{}' (LIBSVM writes {})", tokens[0],
                                  fmt::join(keys, ", ")));
    if (header.count(tokens[0])) r.fail(line_no, fmt::format("'{}' is given twice", tokens[0]));
    header[tokens[0]] = {tokens.begin() + 1, tokens.end()};
    header_line[tokens[0]] = line_no;
  }
  if (!saw_sv) r.fail(0, "no 'SV' line: the header never ends, the support vectors are missing");

  const auto values = [&](const char* key, size_t count) -> const std::vector<std::string>& {
    const auto it = header.find(key);
    if (it == header.end()) r.fail(0, fmt::format("the header has no '{}'", key));
    if (count > 0 && it->second.size() != count)
      r.fail(header_line[key],
             fmt::format("'{}' has {} value(s), {} expected", key, it->second.size(), count));
    return it->second;
  };
  const auto scalar = [&](const char* key) {
    return r.number(values(key, 1)[0], header_line[key], key);
  };

  detail::Svm s;
  const std::string type = values("svm_type", 1)[0];
  bool known_type = false;
  for (const auto& [name, classifies] : kSvmTypes) {
    if (type == name) {
      known_type = true;
      s.classifier = classifies;
    }
  }
  if (!known_type)
    r.fail(header_line["svm_type"],
           fmt::format("svm_type '{}' has no ONNX export in lathe (exported: c_svc, nu_svc, "
                       "epsilon_svr, nu_svr)",
                       type));
  const std::string kernel = values("kernel_type", 1)[0];
  for (const auto& [name, onnx_name] : kKernels)
    if (kernel == name) s.kernel = onnx_name;
  if (s.kernel.empty())
    r.fail(header_line["kernel_type"],
           fmt::format("kernel_type '{}' has no ONNX export (exported: linear, polynomial, rbf, "
                       "sigmoid)",
                       kernel));
  if (s.kernel == "POLY")
    s.degree =
        static_cast<float>(r.integer(values("degree", 1)[0], header_line["degree"], "degree"));
  if (s.kernel != "LINEAR") s.gamma = static_cast<float>(scalar("gamma"));
  if (s.kernel == "POLY" || s.kernel == "SIGMOID") s.coef0 = static_cast<float>(scalar("coef0"));

  const int64_t k = r.integer(values("nr_class", 1)[0], header_line["nr_class"], "nr_class");
  if (k < 2 || k > 65535) r.fail(header_line["nr_class"], fmt::format("nr_class is {}", k));
  const int64_t total = r.integer(values("total_sv", 1)[0], header_line["total_sv"], "total_sv");
  if (total < 1 || total > 100000000)
    r.fail(header_line["total_sv"], fmt::format("total_sv is {}", total));
  s.vectors = total;
  const size_t pairs = static_cast<size_t>(k * (k - 1) / 2);
  const size_t coefs_per_vector = static_cast<size_t>(k - 1);
  for (const auto& t : values("rho", s.classifier ? pairs : 1))
    s.rho.push_back(static_cast<float>(-r.number(t, header_line["rho"], "rho")));
  if (s.classifier) {
    std::set<int64_t> seen;
    for (const auto& t : values("label", static_cast<size_t>(k))) {
      const int64_t label = r.integer(t, header_line["label"], "label");
      if (label < 0 || label >= k || !seen.insert(label).second)
        r.fail(header_line["label"],
               fmt::format("the labels are {}; lathe's svm runs label the classes with their ids "
                           "0..{}, each once",
                           fmt::join(values("label", 0), " "), k - 1));
      s.labels.push_back(label);
    }
    int64_t sum = 0;
    for (const auto& t : values("nr_sv", static_cast<size_t>(k))) {
      const int64_t n = r.integer(t, header_line["nr_sv"], "nr_sv");
      if (n < 0) r.fail(header_line["nr_sv"], fmt::format("nr_sv holds {}", n));
      s.vectors_per_class.push_back(n);
      sum += n;
    }
    if (sum != total)
      r.fail(header_line["nr_sv"],
             fmt::format("nr_sv adds up to {} but total_sv is {}", sum, total));
  } else if (k != 2) {
    r.fail(header_line["nr_class"], fmt::format("a regression model has nr_class 2, not {}", k));
  }

  // The support vectors: "coef... index:value ..." with LIBSVM's 1-based feature indices.
  std::vector<std::vector<std::pair<int64_t, double>>> sparse;
  std::vector<std::vector<double>> coefs(coefs_per_vector);
  int64_t max_index = 0;
  while (std::getline(in, line)) {
    ++line_no;
    const auto tokens = split(line);
    if (tokens.empty()) continue;
    if (static_cast<int64_t>(sparse.size()) == total)
      r.fail(line_no, fmt::format("more support vectors than total_sv {}", total));
    if (tokens.size() < coefs_per_vector)
      r.fail(line_no,
             fmt::format("a support vector line needs {} coefficient(s) first", coefs_per_vector));
    for (size_t c = 0; c < coefs_per_vector; ++c)
      coefs[c].push_back(r.number(tokens[c], line_no, "coefficient"));
    std::vector<std::pair<int64_t, double>> row;
    int64_t last = 0;
    for (size_t t = coefs_per_vector; t < tokens.size(); ++t) {
      const auto colon = tokens[t].find(':');
      if (colon == std::string::npos)
        r.fail(line_no, fmt::format("'{}' is not index:value", tokens[t]));
      const int64_t index = r.integer(tokens[t].substr(0, colon), line_no, "feature index");
      if (index <= last)
        r.fail(line_no, fmt::format("feature index {} after {}: LIBSVM's indices start at 1 and "
                                    "increase",
                                    index, last));
      last = index;
      row.emplace_back(index, r.number(tokens[t].substr(colon + 1), line_no, "feature value"));
    }
    max_index = std::max(max_index, last);
    sparse.push_back(std::move(row));
  }
  if (static_cast<int64_t>(sparse.size()) != total)
    r.fail(0, fmt::format("{} support vectors for total_sv {}", sparse.size(), total));
  if (num_features == 0) num_features = max_index;
  if (max_index > num_features)
    r.fail(0, fmt::format("a support vector uses feature {} but the run's preprocessing makes {} "
                          "features",
                          max_index, num_features));
  if (num_features < 1) r.fail(0, "the support vectors use no feature");

  s.support_vectors.assign(static_cast<size_t>(total * num_features), 0.0f);
  for (size_t v = 0; v < sparse.size(); ++v)
    for (const auto& [index, value] : sparse[v])
      s.support_vectors[v * static_cast<size_t>(num_features) + static_cast<size_t>(index - 1)] =
          static_cast<float>(value);
  for (const auto& row : coefs)
    for (double c : row) s.coefficients.push_back(static_cast<float>(c));
  return detail::svm_model(
      s, num_features,
      fmt::format("LIBSVM {} model, {} kernel, {} support vectors", type, kernel, total));
}

}  // namespace lathe::onnx
