// load_splits: each source (idx, csv, image folder, text) → train/val/test datasets + transforms.
#include "lathe/data/sources.h"

#include <numeric>

#include <ATen/ops/tensor.h>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/data/csv.h"
#include "lathe/data/idx.h"
#include "lathe/data/image.h"
#include "lathe/data/split.h"
#include "lathe/data/tabular.h"
#include "lathe/data/text.h"
#include "lathe/data/transforms.h"

namespace lathe::data {
namespace {

namespace fs = std::filesystem;

std::vector<int64_t> head(std::vector<int64_t> v, int64_t n) {
  if (n > 0 && n < static_cast<int64_t>(v.size())) v.resize(static_cast<size_t>(n));
  return v;
}

std::shared_ptr<const Dataset> subset(std::shared_ptr<const Dataset> base,
                                      std::vector<int64_t> idx) {
  return std::make_shared<SubsetSource>(std::move(base), std::move(idx));
}

/// train/val/test of `base`: by fraction (stratified by `strata` when defined), with limits.
void split_into(DataSplits& out, const std::shared_ptr<const Dataset>& base,
                const config::DataSection& cfg, uint64_t seed, const at::Tensor& strata,
                bool with_test) {
  const SplitIndices s = split_indices(base->size(), cfg.val_fraction,
                                       with_test ? cfg.test_fraction : 0.0, seed, strata);
  out.train = subset(base, head(s.train, cfg.limit_train));
  out.val = subset(base, s.val);
  if (with_test) out.test = subset(base, head(s.test, cfg.limit_test));
}

at::Tensor labels_of(const std::vector<int64_t>& v) {
  return at::tensor(v, at::TensorOptions().dtype(at::kLong));
}

/// to_float + normalize appended to `steps`.
Transform finish(std::vector<Transform> steps, const std::vector<double>& mean,
                 const std::vector<double>& std) {
  steps.push_back(transforms::to_float());
  steps.push_back(transforms::normalize(mean, std));
  return compose(std::move(steps));
}

bool has_resized_crop(const std::vector<std::string>& augment) {
  for (const auto& a : augment)
    if (a.rfind("random_resized_crop", 0) == 0) return true;
  return false;
}

DataSplits load_idx(const config::DataSection& cfg, uint64_t seed) {
  const IdxSplit train_raw = load_idx_split(cfg.path, "train");
  const IdxSplit test_raw = load_idx_split(cfg.path, "t10k");
  const TensorDataset full =
      TensorDataset{images_to_float(train_raw.images), train_raw.labels}.head(cfg.limit_train);
  const TensorDataset test =
      TensorDataset{images_to_float(test_raw.images), test_raw.labels}.head(cfg.limit_test);
  auto [train, val] = split_holdout(full, cfg.val_fraction, seed);

  DataSplits out;
  out.task = "classification";
  for (int64_t c = 0; c <= train.targets.max().item<int64_t>(); ++c)
    out.classes.push_back(std::to_string(c));
  if (cfg.mean.empty())
    std::tie(out.mean, out.std) = channel_stats(train.inputs);  // train only
  else
    std::tie(out.mean, out.std) = std::pair(cfg.mean, cfg.std);
  const int64_t native = train.inputs.size(2);
  const int64_t size = cfg.image_size > 0 ? cfg.image_size : native;
  std::vector<Transform> eval_steps;
  if (size != native) eval_steps.push_back(transforms::resize(size, size));
  std::vector<Transform> train_steps =
      has_resized_crop(cfg.augment) ? std::vector<Transform>{} : eval_steps;
  for (auto& t : parse_augment(cfg.augment, size)) train_steps.push_back(std::move(t));
  out.train_transform = finish(train_steps, out.mean, out.std);
  out.eval_transform = finish(eval_steps, out.mean, out.std);
  out.input_shape = {train.inputs.size(1), size, size};
  out.train = std::make_shared<TensorSource>(std::move(train));
  out.val = std::make_shared<TensorSource>(std::move(val));
  out.test = std::make_shared<TensorSource>(test);
  return out;
}

DataSplits load_csv(const config::DataSection& cfg, uint64_t seed) {
  LATHE_CHECK(!cfg.target.empty(), ConfigError,
              "data.target: the csv source needs the target column's name (data.target=...)");
  CsvOptions opts;
  opts.skip_bad_rows = cfg.skip_bad_records;
  const CsvTable table = read_csv(cfg.path, opts);
  TabularSpec spec;
  spec.target = cfg.target;
  spec.task = cfg.task == "auto" ? infer_task(table, cfg.target) : cfg.task;
  spec.all.impute = cfg.impute;
  spec.all.outliers = cfg.outliers;
  spec.all.scale = cfg.scale;
  spec.all.encode = cfg.encode;
  spec.all.validate("data");
  for (const auto& [name, value] : cfg.columns.values()) {
    ColumnSteps steps = spec.all;
    for (const auto& item : value.items) steps = steps.with(item, value.where);
    spec.columns[name] = steps;
  }
  const bool own_test = !cfg.test_path.empty();
  const at::Tensor strata =
      spec.task == "classification" ? target_strata(table, cfg.target) : at::Tensor();
  const SplitIndices s = split_indices(table.num_rows(), cfg.val_fraction,
                                       own_test ? 0.0 : cfg.test_fraction, seed, strata);
  const CsvTable train_rows = table.select(head(s.train, cfg.limit_train));
  const TabularPreprocessor prep = TabularPreprocessor::fit(train_rows, spec);
  const CsvTable test_rows =
      own_test ? read_csv(cfg.test_path, opts) : table.select(head(s.test, cfg.limit_test));
  const auto source = [&](const CsvTable& rows) {
    TabularData d = prep.transform(rows);
    return std::make_shared<TensorSource>(TensorDataset{d.inputs, d.targets});
  };
  DataSplits out;
  out.train = source(train_rows);
  out.val = source(table.select(s.val));
  out.test = source(test_rows);
  out.task = prep.task();
  out.classes = prep.classes();
  out.preprocessing_json = prep.to_json();
  out.input_shape = {prep.num_features()};
  out.skipped = table.skipped + (own_test ? test_rows.skipped : 0);
  return out;
}

DataSplits load_image_folder(const config::DataSection& cfg, uint64_t seed) {
  const fs::path root = cfg.path;
  const int64_t size = cfg.image_size > 0 ? cfg.image_size : 224;
  ImageFolderOptions opts;
  opts.min_side = static_cast<int>(size);  // decode large JPEGs at a reduced DCT scale
  opts.skip_bad_files = cfg.skip_bad_records;
  opts.max_pixels = cfg.max_image_pixels;
  DataSplits out;
  const bool layout = fs::is_directory(root / "train");
  auto base = std::make_shared<ImageFolder>(layout ? root / "train" : root, opts);
  out.classes = base->classes();
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < base->size(); ++i) labels.push_back(base->label(i));
  const bool own_val = layout && fs::is_directory(root / "val");
  const bool own_test = layout && fs::is_directory(root / "test");
  if (own_val) {
    out.train = subset(base, head(split_indices(base->size(), 0, 0, seed).train, cfg.limit_train));
    out.val = std::make_shared<ImageFolder>(root / "val", opts);
  } else {
    split_into(out, base, cfg, seed, labels_of(labels), !own_test);
  }
  if (own_test) {
    auto test = std::make_shared<ImageFolder>(root / "test", opts);
    LATHE_CHECK(test->classes() == out.classes, DataError,
                "{}: its class folders differ from {}'s; both need the same class subfolders",
                (root / "test").string(), (root / "train").string());
    std::vector<int64_t> all(static_cast<size_t>(test->size()));
    std::iota(all.begin(), all.end(), 0);
    out.test = subset(test, head(all, cfg.limit_test));
  }
  out.skipped = base->skipped();
  out.task = "classification";
  out.mean = cfg.mean.empty() ? std::vector<double>{0.485, 0.456, 0.406} : cfg.mean;  // ImageNet
  out.std = cfg.std.empty() ? std::vector<double>{0.229, 0.224, 0.225} : cfg.std;
  const std::vector<Transform> eval_steps = {transforms::resize_shorter(size),
                                             transforms::center_crop(size)};
  std::vector<Transform> train_steps =
      has_resized_crop(cfg.augment) ? std::vector<Transform>{} : eval_steps;
  for (auto& t : parse_augment(cfg.augment, size)) train_steps.push_back(std::move(t));
  out.train_transform = finish(train_steps, out.mean, out.std);
  out.eval_transform = finish(eval_steps, out.mean, out.std);
  out.input_shape = {3, size, size};
  return out;
}

DataSplits load_text(const config::DataSection& cfg) {
  auto corpus = std::make_shared<ByteCorpus>(cfg.path, cfg.seq_len);
  const int64_t n = corpus->size();
  const auto n_test =
      static_cast<int64_t>(std::llround(cfg.test_fraction * static_cast<double>(n)));
  const auto n_val = static_cast<int64_t>(std::llround(cfg.val_fraction * static_cast<double>(n)));
  LATHE_CHECK(n - n_val - n_test > 0, DataError,
              "{}: {} windows of {} bytes leave none for training after val and test", cfg.path, n,
              cfg.seq_len);
  std::vector<int64_t> idx(static_cast<size_t>(n));
  std::iota(idx.begin(), idx.end(), 0);
  const auto range = [&](int64_t lo, int64_t hi) {
    return std::vector<int64_t>(idx.begin() + lo, idx.begin() + hi);
  };
  DataSplits out;  // in order, so no window of val/test overlaps the training text
  out.train = subset(corpus, head(range(0, n - n_val - n_test), cfg.limit_train));
  out.val = subset(corpus, range(n - n_val - n_test, n - n_test));
  out.test = subset(corpus, head(range(n - n_test, n), cfg.limit_test));
  out.task = "language_model";
  out.vocab_size = 256;
  out.input_shape = {cfg.seq_len};
  return out;
}

DataSplits load_text_csv(const config::DataSection& cfg, uint64_t seed) {
  LATHE_CHECK(!cfg.vocab.empty(), ConfigError,
              "data.vocab: the text_csv source needs a BERT vocab.txt (data.vocab=...)");
  LATHE_CHECK(!cfg.target.empty(), ConfigError,
              "data.target: the text_csv source needs the label column's name (data.target=...)");
  const WordPiece tok(cfg.vocab);
  CsvOptions opts;
  opts.skip_bad_rows = cfg.skip_bad_records;
  const CsvTable table = read_csv(cfg.path, opts);
  const bool replace = cfg.invalid_utf8 == "replace";
  auto all = std::make_shared<TextClassificationCsv>(table, cfg.text_column, cfg.target, tok,
                                                     cfg.max_length, replace);
  DataSplits out;
  out.classes = all->classes();
  if (cfg.test_path.empty()) {
    split_into(out, all, cfg, seed, all->labels(), true);
  } else {
    split_into(out, all, cfg, seed, all->labels(), false);
    auto test = std::make_shared<TextClassificationCsv>(
        read_csv(cfg.test_path, opts), cfg.text_column, cfg.target, tok, cfg.max_length, replace);
    LATHE_CHECK(test->classes() == out.classes, DataError,
                "{}: its labels differ from {}'s ({} vs {} classes)", cfg.test_path, cfg.path,
                test->classes().size(), out.classes.size());
    out.test = test;
  }
  out.task = "classification";
  out.vocab_size = tok.vocab_size();
  out.input_shape = {cfg.max_length};
  out.skipped = table.skipped;
  return out;
}

}  // namespace

std::vector<Transform> parse_augment(const std::vector<std::string>& augment, int64_t size) {
  std::vector<Transform> out;
  for (const auto& item : augment) {
    const auto colon = item.find(':');
    const std::string name = item.substr(0, colon);
    double arg = -1;
    if (colon != std::string::npos)
      LATHE_CHECK(parse_number(item.substr(colon + 1), arg) && arg >= 0, ConfigError,
                  "data.augment: '{}': the value after ':' must be a non-negative number", item);
    if (name == "random_crop") {
      // Bounded by the crop itself: more padding than that only crops blank borders, and a huge
      // one would allocate a huge padded image per record.
      LATHE_CHECK(arg <= static_cast<double>(size), ConfigError,
                  "data.augment: '{}': the padding must be at most the image size {}", item, size);
      out.push_back(transforms::random_crop(size, arg < 0 ? 4 : static_cast<int64_t>(arg)));
    } else if (name == "hflip") {
      LATHE_CHECK(arg <= 1, ConfigError,
                  "data.augment: '{}': the flip probability must be in [0, 1]", item);
      out.push_back(transforms::horizontal_flip(arg < 0 ? 0.5 : arg));
    } else if (name == "random_resized_crop") {
      LATHE_CHECK(arg != 0 && arg <= 1, ConfigError,
                  "data.augment: '{}': the minimum scale must be in (0, 1]", item);
      out.push_back(transforms::random_resized_crop(size, {arg < 0 ? 0.08 : arg, 1.0}));
    } else {
      throw ConfigError(
          fmt::format("data.augment: unknown augmentation '{}'; known: "
                      "random_crop[:pad], hflip[:p], random_resized_crop[:min_scale]",
                      item));
    }
  }
  return out;
}

DataSplits load_splits(const config::DataSection& cfg, uint64_t seed) {
  const Doing doing(fmt::format("loading the {} data at {}", cfg.source, cfg.path));
  DataSplits out;
  if (cfg.source == "idx")
    out = load_idx(cfg, seed);
  else if (cfg.source == "csv")
    out = load_csv(cfg, seed);
  else if (cfg.source == "image_folder")
    out = load_image_folder(cfg, seed);
  else if (cfg.source == "text")
    out = load_text(cfg);
  else if (cfg.source == "text_csv")
    out = load_text_csv(cfg, seed);
  else
    throw ConfigError(
        fmt::format("data.source: unknown source '{}'; available: idx, csv, "
                    "image_folder, text, text_csv",
                    cfg.source));
  LATHE_CHECK(out.train->size() > 0, DataError,
              "{}: no training records left (limit_train {}, val_fraction {}, test_fraction {})",
              cfg.path, cfg.limit_train, cfg.val_fraction, cfg.test_fraction);
  if (out.skipped > 0) log::warn("{}: {} bad record(s) skipped", cfg.path, out.skipped);
  return out;
}

Loaders make_loaders(const config::DataSection& cfg, const DataSplits& splits, uint64_t seed,
                     Shard shard) {
  const auto opts = [&](int64_t batch, bool train) {
    Shard part = shard;
    part.pad = train;
    return LoaderOptions()
        .with_batch_size(batch)
        .with_shuffle(train)
        .with_seed(seed)
        .with_num_workers(cfg.num_workers)
        .with_transform(train ? splits.train_transform : splits.eval_transform)
        .with_shard(part);
  };
  Loaders out;
  const int64_t train_batch = cfg.batch_size / std::max<int64_t>(shard.world, 1);  // per rank
  out.train = std::make_unique<DataLoader>(splits.train, opts(train_batch, true));
  if (splits.val && splits.val->size() > 0)
    out.val = std::make_unique<DataLoader>(splits.val, opts(cfg.eval_batch_size, false));
  if (splits.test && splits.test->size() > 0)
    out.test = std::make_unique<DataLoader>(splits.test, opts(cfg.eval_batch_size, false));
  return out;
}

}  // namespace lathe::data
