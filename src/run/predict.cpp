// predict: a finished run's model on new images, table rows or texts, a batch at a time.
#include "lathe/run/predict.h"

#include <glob.h>

#include <algorithm>
#include <fstream>
#include <memory>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/csrc/autograd/grad_mode.h>
#include <torch/nn/modules/container/any.h>

#include "lathe/config/config.h"
#include "lathe/core/activity.h"
#include "lathe/core/autocast.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/gpu.h"
#include "lathe/core/log.h"
#include "lathe/core/runtime.h"
#include "lathe/data/csv_stream.h"
#include "lathe/data/image.h"
#include "lathe/data/tabular.h"
#include "lathe/data/tensor_data.h"
#include "lathe/data/text.h"
#include "lathe/data/transforms.h"
#include "src/run/finished_run.h"

namespace lathe::run {
namespace {

namespace fs = std::filesystem;

/// The finished run as predict needs it: its resolved config, its model (eval mode, on its
/// device) and its class names.
struct LoadedRun {
  fs::path dir;
  config::RunConfig cfg;
  torch::nn::AnyModule model;
  c10::Device device{c10::kCPU};
  std::string precision;
  std::vector<std::string> classes;
  int64_t batch_size = 0;
  int64_t top_k = 1;
};

std::vector<std::string> read_lines(const fs::path& file) {
  std::ifstream in(file);
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);)
    if (!line.empty()) lines.push_back(line);
  return lines;
}

LoadedRun load_run(const fs::path& run_dir, const PredictOptions& o) {
  std::vector<std::string> overrides;
  if (!o.device.empty()) overrides.push_back("run.device=" + o.device);
  LoadedRun run;
  run.dir = run_dir;
  run.cfg = detail::load_finished_config(run_dir, overrides);
  const config::RunConfig& cfg = run.cfg;
  LATHE_CHECK(cfg.task.kind != "lm", ConfigError,
              "{}: a language model (task lm) has no classes or values to predict; sample text "
              "from it with: lathe generate {} --prompt TEXT",
              (run_dir / "config.yaml").string(), run_dir.string());
  LATHE_CHECK(o.top_k >= 1, ConfigError, "--top-k {}: give 1 or more", o.top_k);
  LATHE_CHECK(o.batch_size >= 0, ConfigError, "--batch-size {}: give 1 or more", o.batch_size);
  run.batch_size = o.batch_size > 0 ? o.batch_size : cfg.data.eval_batch_size;
  run.top_k = o.top_k;
  setup_threads(cfg.run.threads);
  run.device = select_device(cfg.run.device);
  use_device(run.device);
  run.precision = resolve_precision(cfg.trainer.precision, run.device);
  run.model = detail::load_finished_model(cfg, run_dir, o.weights, run.device);
  if (cfg.task.kind == "classification") {
    const auto classes_file = run_dir / "classes.txt";
    LATHE_CHECK(fs::exists(classes_file), DataError,
                "{}: missing; a classification run writes its class names there (retrain, or "
                "write one name per line in class-id order)",
                classes_file.string());
    run.classes = read_lines(classes_file);
  }
  return run;
}

/// The model's answers to a batch of prepared inputs (B, ...): one Prediction per id.
std::vector<Prediction> answer(LoadedRun& run, const at::Tensor& inputs,
                               std::vector<std::string> ids) {
  at::Tensor out;
  {
    torch::NoGradGuard no_grad;
    const AutocastGuard amp(run.device.type(),
                            run.precision == "fp16" ? at::kHalf : at::kBFloat16,
                            run.precision != "32");
    out = run.model.forward<at::Tensor>(inputs.to(run.device));
  }
  out = out.to(at::kFloat).cpu().reshape({inputs.size(0), -1});  // (B, K)
  const auto B = static_cast<size_t>(out.size(0));
  std::vector<Prediction> batch(B);
  for (size_t i = 0; i < B; ++i) batch[i].id = std::move(ids[i]);
  if (run.cfg.task.kind == "regression") {
    LATHE_CHECK(out.size(1) == 1, ModelError,
                "{}: the model gives {} values per record; a regression run predicts one",
                run.dir.string(), out.size(1));
    const at::Tensor values = out.contiguous();  // (B, 1)
    for (size_t i = 0; i < B; ++i) batch[i].value = values.data_ptr<float>()[i];
    return batch;
  }
  const auto K = static_cast<int64_t>(run.classes.size());
  LATHE_CHECK(out.size(1) == K, ModelError,
              "{}: the model gives {} outputs per record but classes.txt names {} classes",
              run.dir.string(), out.size(1), K);
  const auto k = static_cast<size_t>(std::min(run.top_k, K));
  const auto [top, idx] = at::softmax(out, 1).topk(static_cast<int64_t>(k), 1);  // (B, k)
  const at::Tensor probs = top.contiguous(), order = idx.contiguous();
  for (size_t i = 0; i < B; ++i)
    for (size_t j = 0; j < k; ++j) {
      batch[i].labels.push_back(run.classes[static_cast<size_t>(order.data_ptr<int64_t>()[i * k + j])]);
      batch[i].probabilities.push_back(probs.data_ptr<float>()[i * k + j]);
    }
  return batch;
}

// ---- images ---------------------------------------------------------------------------------

bool is_image(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char c) { return std::tolower(c); });
  return ext == ".png" || ext == ".jpg" || ext == ".jpeg";
}

/// Files, folders (recursively, sorted) and glob patterns → image paths, in the order given.
std::vector<fs::path> image_files(const std::vector<std::string>& inputs) {
  std::vector<fs::path> out;
  const auto add = [&](const fs::path& p) {
    if (fs::is_directory(p)) {
      std::vector<fs::path> found;
      for (const auto& e : fs::recursive_directory_iterator(p))
        if (e.is_regular_file() && is_image(e.path())) found.push_back(e.path());
      LATHE_CHECK(!found.empty(), DataError, "{}: no PNG or JPEG images in this folder",
                  p.string());
      std::sort(found.begin(), found.end());
      out.insert(out.end(), found.begin(), found.end());
      return;
    }
    LATHE_CHECK(is_image(p), DataError,
                "{}: not an image this run reads (.png, .jpg or .jpeg); give image files, "
                "folders of them or a glob such as 'photos/*.jpg'",
                p.string());
    out.push_back(p);
  };
  for (const auto& input : inputs) {
    if (fs::exists(input) || input.find_first_of("*?[") == std::string::npos) {
      LATHE_CHECK(fs::exists(input), DataError, "{}: no such file or folder", input);
      add(input);
      continue;
    }
    glob_t g{};
    const int rc = ::glob(input.c_str(), 0, nullptr, &g);
    std::vector<fs::path> matches(g.gl_pathv, g.gl_pathv + (rc == 0 ? g.gl_pathc : 0));
    globfree(&g);
    LATHE_CHECK(!matches.empty(), DataError, "{}: the pattern matches no file", input);
    for (const auto& m : matches) add(m);
  }
  return out;
}

/// One image file → (C, S, S) float, prepared as the run's evaluation data: idx runs as
/// load_splits does (images_to_float, resized to the run's side when it differs, normalised);
/// image_folder runs through its evaluation transforms.
class ImagePreparer {
 public:
  explicit ImagePreparer(const config::DataSection& d) : d_(d) {
    side_ = d.image_size;
    LATHE_CHECK(side_ > 0 && !d.mean.empty(), ConfigError,
                "data.image_size / data.mean: the run's config.yaml lacks the resolved image size "
                "or normalisation; predict reads them from a finished run's config");
    if (d.source == "image_folder") {
      channels_ = 3;
      eval_ = data::compose({data::transforms::resize_shorter(side_),
                             data::transforms::center_crop(side_), data::transforms::to_float(),
                             data::transforms::normalize(d.mean, d.std)});
    } else {
      channels_ = static_cast<int>(d.mean.size());  // idx: one mean per channel, resolved
      LATHE_CHECK(channels_ == 1 || channels_ == 3, ConfigError,
                  "data.mean has {} values; an idx run's images have 1 or 3 channels",
                  channels_);
    }
  }

  at::Tensor operator()(const fs::path& file) const {
    if (eval_) {
      data::Rng rng(0);  // the evaluation transforms draw nothing
      return eval_(data::read_image(file, 3, static_cast<int>(side_), d_.max_image_pixels), rng);
    }
    const at::Tensor raw = data::read_image(file, channels_, 0, d_.max_image_pixels);  // (C, H, W)
    at::Tensor x = data::images_to_float(raw.permute({1, 2, 0}).unsqueeze(0));       // (1, C, H, W)
    if (x.size(2) != side_ || x.size(3) != side_)
      x = data::transforms::resize_image(x[0], side_, side_).unsqueeze(0);
    return data::normalize(x, d_.mean, d_.std)[0];  // (C, S, S)
  }

 private:
  const config::DataSection& d_;
  int64_t side_ = 0;
  int channels_ = 3;
  data::Transform eval_;
};

PredictSummary predict_images(LoadedRun& run, const std::vector<std::string>& inputs,
                              bool progress, const PredictionSink& sink) {
  const std::vector<fs::path> files = image_files(inputs);
  const ImagePreparer prepare(run.cfg.data);
  log::ProgressBar bar("predict", static_cast<int64_t>(files.size()), stderr, progress);
  PredictSummary summary;
  for (size_t start = 0; start < files.size(); start += static_cast<size_t>(run.batch_size)) {
    const size_t end = std::min(files.size(), start + static_cast<size_t>(run.batch_size));
    std::vector<at::Tensor> images;
    std::vector<std::string> ids;
    for (size_t i = start; i < end; ++i) {
      images.push_back(prepare(files[i]));
      ids.push_back(files[i].string());
    }
    sink(answer(run, at::stack(images), std::move(ids)));  // (B, C, S, S)
    summary.records += static_cast<int64_t>(end - start);
    bar.update(static_cast<int64_t>(end));
  }
  bar.finish();
  return summary;
}

// ---- tables and texts -----------------------------------------------------------------------

/// The id of a CSV record: its 1-based record number in `file` (CsvTable::records: the header
/// and blank lines not counted, skipped malformed records counted), prefixed by the file when
/// several files are read.
std::string record_id(const std::string& file, int64_t record, bool several) {
  return several ? fmt::format("{}:{}", file, record) : std::to_string(record);
}

/// Reads `file` as CSV `batch` rows at a time and calls `each(chunk)`.
template <typename Fn>
int64_t for_each_chunk(const LoadedRun& run, const std::string& file,
                       const std::vector<std::string>& needed, bool progress, Fn&& each) {
  data::CsvOptions opts;
  opts.skip_bad_rows = run.cfg.data.skip_bad_records;
  data::CsvChunkReader reader(file, run.batch_size, opts);
  for (const auto& name : needed) {
    const auto& cols = reader.columns();
    LATHE_CHECK(std::find(cols.begin(), cols.end(), name) != cols.end(), DataError,
                "{}:1: no column '{}', which the run was trained on (the header has: {}); add the "
                "column (empty cells are imputed as in training when the run imputes)",
                file, name, fmt::join(cols, ", "));
  }
  log::ProgressBar bar(fmt::format("predict {}", fs::path(file).filename().string()),
                       std::max<int64_t>(reader.file_size() / 1024, 1), stderr, progress);
  int64_t rows = 0, skipped = 0;
  for (data::CsvTable chunk; reader.next(chunk);) {
    each(chunk);
    rows += chunk.num_rows();
    skipped += chunk.skipped;
    bar.update(reader.bytes_read() / 1024, fmt::format("{} records (KiB read)", rows));
  }
  bar.finish();
  return skipped;
}

PredictSummary predict_table(LoadedRun& run, const std::vector<std::string>& inputs,
                             bool progress, const PredictionSink& sink) {
  const auto prep = data::TabularPreprocessor::load(run.dir / "preprocessing.json");
  std::vector<std::string> needed;
  for (const auto& c : prep.columns()) needed.push_back(c.name);
  PredictSummary summary;
  for (const auto& file : inputs) {
    summary.skipped += for_each_chunk(
        run, file, needed, progress, [&](const data::CsvTable& chunk) {
          const data::TabularData d = prep.transform(chunk, /*with_targets=*/false);
          summary.skipped += chunk.num_rows() - static_cast<int64_t>(d.rows.size());
          if (d.rows.empty()) return;
          std::vector<std::string> ids;
          for (const int64_t r : d.rows)
            ids.push_back(record_id(file, chunk.records[static_cast<size_t>(r)], inputs.size() > 1));
          sink(answer(run, d.inputs, std::move(ids)));  // (B, F)
          summary.records += static_cast<int64_t>(d.rows.size());
        });
  }
  return summary;
}

PredictSummary predict_text(LoadedRun& run, const std::vector<std::string>& inputs,
                            bool progress, const PredictionSink& sink) {
  const config::DataSection& d = run.cfg.data;
  const data::WordPiece tok(d.vocab);
  const int64_t L = d.max_length;
  PredictSummary summary;
  std::vector<int64_t> ids_flat;
  std::vector<std::string> ids;
  const auto flush = [&] {
    if (ids.empty()) return;
    const auto n = static_cast<int64_t>(ids.size());
    at::Tensor x = at::from_blob(ids_flat.data(), {n, L}, at::kLong).clone();  // (B, L)
    sink(answer(run, x, std::move(ids)));
    summary.records += n;
    ids.clear();
    ids_flat.clear();
  };
  const auto add = [&](const std::string& text, const std::string& where, std::string id) {
    size_t bad = 0;
    LATHE_CHECK(d.invalid_utf8 == "replace" || data::valid_utf8(text, bad), DataError,
                "{}: the text is not valid UTF-8 (byte {}); convert it to UTF-8, or predict with "
                "a run trained with data.invalid_utf8=replace",
                where, bad + 1);
    const data::Encoding e = tok.encode(text, L);
    ids_flat.insert(ids_flat.end(), e.ids.begin(), e.ids.end());
    ids.push_back(std::move(id));
    if (static_cast<int64_t>(ids.size()) == run.batch_size) flush();
  };
  const bool several = inputs.size() > 1;
  for (const auto& file : inputs) {
    if (fs::path(file).extension() == ".csv") {
      summary.skipped += for_each_chunk(
          run, file, {d.text_column}, progress, [&](const data::CsvTable& chunk) {
            const auto c = static_cast<size_t>(chunk.column_index(d.text_column));
            for (int64_t r = 0; r < chunk.num_rows(); ++r)
              add(chunk.rows[static_cast<size_t>(r)][c], chunk.where(r),
                  record_id(file, chunk.records[static_cast<size_t>(r)], several));
          });
      flush();
      continue;
    }
    const std::string why = not_a_regular_file(file);
    LATHE_CHECK(why.empty(), DataError, "{}: cannot read this text file: {}", file, why);
    std::ifstream in(file, std::ios::binary);
    int64_t line_no = 0;
    for (std::string line; std::getline(in, line);) {
      ++line_no;
      if (!line.empty() && line.back() == '\r') line.pop_back();
      if (line.find_first_not_of(" \t") == std::string::npos) continue;
      add(line, fmt::format("{}:{}", file, line_no),
          several ? fmt::format("{}:{}", file, line_no) : std::to_string(line_no));
    }
    flush();
  }
  return summary;
}

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n\r") == std::string::npos) return s;
  std::string out = "\"";
  for (const char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

}  // namespace

PredictSummary predict(const fs::path& run_dir, const std::vector<std::string>& inputs,
                       const PredictOptions& options, const PredictionSink& sink) {
  const Doing doing(fmt::format("predicting with the run {}", run_dir.string()));
  LATHE_CHECK(!inputs.empty(), ConfigError,
              "lathe predict: give the records to answer (image files, folders or globs; CSV "
              "files; text files)");
  LoadedRun run = load_run(run_dir, options);
  PredictSummary summary;
  switch (config::source_spec(run.cfg.data.source).kind) {
    case config::SourceKind::idx:
    case config::SourceKind::image_folder:
      summary = predict_images(run, inputs, options.progress, sink);
      break;
    case config::SourceKind::csv: summary = predict_table(run, inputs, options.progress, sink); break;
    case config::SourceKind::text_csv:
      summary = predict_text(run, inputs, options.progress, sink);
      break;
    case config::SourceKind::text: break;  // refused by load_run (task lm)
  }
  summary.task = run.cfg.task.kind;
  return summary;
}

PredictionWriter::PredictionWriter(std::ostream& out, bool jsonl, int64_t top_k)
    : out_(out), jsonl_(jsonl), top_k_(top_k) {}

void PredictionWriter::write(const std::vector<Prediction>& batch) {
  if (batch.empty()) return;
  const bool regression = batch.front().labels.empty();
  if (!jsonl_ && !header_done_) {
    std::string header = "id";
    if (regression) header += ",value";
    else if (top_k_ == 1) header += ",label,probability";
    else
      for (int64_t j = 1; j <= static_cast<int64_t>(batch.front().labels.size()); ++j)
        header += fmt::format(",label_{},probability_{}", j, j);
    out_ << header << '\n';
    header_done_ = true;
  }
  std::string text;
  for (const Prediction& p : batch) {
    if (jsonl_) {
      nlohmann::ordered_json j;
      j["id"] = p.id;
      if (regression) {
        j["value"] = p.value;
      } else if (top_k_ == 1) {
        j["label"] = p.labels[0];
        j["probability"] = p.probabilities[0];
      } else {
        for (size_t k = 0; k < p.labels.size(); ++k)
          j["top"].push_back({{"label", p.labels[k]}, {"probability", p.probabilities[k]}});
      }
      text += j.dump() + "\n";
      continue;
    }
    text += csv_field(p.id);
    if (regression) text += fmt::format(",{:.9g}", p.value);
    for (size_t k = 0; k < p.labels.size(); ++k)
      text += fmt::format(",{},{:.6f}", csv_field(p.labels[k]), p.probabilities[k]);
    text += '\n';
  }
  out_ << text;
  LATHE_CHECK(out_.good(), IoError, "writing the predictions failed (disk full, or the reader "
                                     "of the output went away)");
}

}  // namespace lathe::run
