// load_splits: each source (idx, csv, image folder, text) → train/val/test datasets + transforms.
#include "lathe/data/sources.h"

#include <numeric>
#include <optional>

#include <ATen/ops/tensor.h>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/data/csv.h"
#include "lathe/data/idx.h"
#include "lathe/data/image.h"
#include "lathe/data/split.h"
#include "lathe/data/tabular.h"
#include "lathe/data/tensor_data.h"
#include "lathe/data/text.h"
#include "lathe/data/tokenizer.h"
#include "lathe/data/transforms.h"
#include "read_file.h"

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

/// train/val/test of `base`: by fraction (stratified by `strata` when defined), with limits. The
/// train part reads `train_base` when given (the same records in another form).
void split_into(DataSplits& out, const std::shared_ptr<const Dataset>& base,
                const config::DataSection& cfg, uint64_t seed, const at::Tensor& strata,
                bool with_test, const std::shared_ptr<const Dataset>& train_base = nullptr) {
  const SplitIndices s = split_indices(base->size(), cfg.val_fraction,
                                       with_test ? cfg.test_fraction : 0.0, seed, strata);
  out.train = subset(train_base ? train_base : base, head(s.train, cfg.limit_train));
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

/// Keeps the records whose class is in `classes`, relabelled by position in that list.
TensorDataset select_classes(const TensorDataset& d, const std::vector<int64_t>& classes,
                             const std::string& origin) {
  if (classes.empty()) return d;
  const int64_t max_label = d.targets.max().item<int64_t>();
  at::Tensor relabel = at::full({max_label + 1}, -1, at::kLong);  // old id → new id or -1
  for (size_t i = 0; i < classes.size(); ++i) {
    LATHE_CHECK(classes[i] >= 0 && classes[i] <= max_label, ConfigError,
                "data.classes: class {} does not occur in {} (ids 0..{})", classes[i], origin,
                max_label);
    relabel[classes[i]] = static_cast<int64_t>(i);
  }
  const at::Tensor mapped = relabel.index_select(0, d.targets);
  const at::Tensor keep = mapped.ge(0).nonzero().squeeze(1);
  return {d.inputs.index_select(0, keep), mapped.index_select(0, keep)};
}

/// Every label of `d` is a class id in [0, classes); else a DataError naming the file and record.
void check_labels(const TensorDataset& d, int64_t classes, const std::string& origin) {
  if (d.size() == 0) return;
  const at::Tensor bad = d.targets.lt(0).logical_or(d.targets.ge(classes)).nonzero();
  LATHE_CHECK(bad.size(0) == 0, DataError,
              "{}: record {} has class id {}, but the training split has {} classes (ids 0..{}); "
              "keep the classes both have with data.classes",
              origin, bad.size(0) ? bad[0][0].item<int64_t>() : 0,
              bad.size(0) ? d.targets[bad[0][0]].item<int64_t>() : 0, classes, classes - 1);
}

DataSplits load_idx(const config::DataSection& cfg, uint64_t seed) {
  const IdxSplit train_raw = load_idx_split(cfg.path, "train");
  const IdxSplit test_raw = load_idx_split(cfg.path, "t10k");
  const std::string train_origin = cfg.path + "/train-*";
  const std::string test_origin = cfg.path + "/t10k-labels-idx1-ubyte";
  const TensorDataset full =
      select_classes({images_to_float(train_raw.images), train_raw.labels}, cfg.classes,
                     train_origin)
          .head(cfg.limit_train);
  const TensorDataset test =
      select_classes({images_to_float(test_raw.images), test_raw.labels}, cfg.classes,
                     test_origin)
          .head(cfg.limit_test);
  auto [train, val] = split_holdout(full, cfg.val_fraction, seed);
  LATHE_CHECK(train.size() > 0, DataError, "{}: no training records left (limit_train {})",
              train_origin, cfg.limit_train);

  DataSplits out;
  const int64_t num_classes =
      cfg.classes.empty() ? train.targets.max().item<int64_t>() + 1
                          : static_cast<int64_t>(cfg.classes.size());
  for (int64_t c = 0; c < num_classes; ++c)
    out.info.classes.push_back(std::to_string(cfg.classes.empty() ? c : cfg.classes[size_t(c)]));
  check_labels(val, num_classes, train_origin);
  check_labels(test, num_classes, test_origin);
  if (cfg.mean.empty())
    std::tie(out.mean, out.std) = channel_stats(train.inputs);  // train only
  else
    std::tie(out.mean, out.std) = std::pair(cfg.mean, cfg.std);
  const int64_t native = train.inputs.size(2);
  const int64_t size = cfg.image_size > 0 ? cfg.image_size : native;
  out.info.task = "classification";
  out.info.channels = train.inputs.size(1);
  out.info.side = size;
  if (cfg.augment.empty() && size == native) {  // nothing per record: normalise once, in memory
    for (TensorDataset* d : {&train, &val})
      if (d->size() > 0) d->inputs = normalize(d->inputs, out.mean, out.std);
    TensorDataset normalized_test = test;
    if (test.size() > 0) normalized_test.inputs = normalize(test.inputs, out.mean, out.std);
    out.train_transform = out.eval_transform = compose({});
    out.in_memory = true;
    out.train = std::make_shared<TensorSource>(std::move(train));
    out.val = std::make_shared<TensorSource>(std::move(val));
    out.test = std::make_shared<TensorSource>(std::move(normalized_test));
    return out;
  }
  std::vector<Transform> eval_steps;
  if (size != native) eval_steps.push_back(transforms::resize(size, size));
  std::vector<Transform> train_steps =
      has_resized_crop(cfg.augment) ? std::vector<Transform>{} : eval_steps;
  for (auto& t : parse_augment(cfg.augment, size)) train_steps.push_back(std::move(t));
  out.train_transform = finish(train_steps, out.mean, out.std);
  out.eval_transform = finish(eval_steps, out.mean, out.std);
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
  spec.task = cfg.task == "auto" ? infer_task(table, cfg.target) : cfg.task;  // one answer with
                                                                               // task.kind
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
  out.info.task = prep.task();
  out.info.classes = prep.classes();
  out.info.feature_names = prep.feature_names();
  out.info.num_features = prep.num_features();
  out.preprocessing_json = prep.to_json();
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
  out.info.classes = base->classes();
  std::vector<int64_t> labels;
  for (int64_t i = 0; i < base->size(); ++i) labels.push_back(base->label(i));
  const bool own_val = layout && fs::is_directory(root / "val");
  const bool own_test = layout && fs::is_directory(root / "test");
  // With random_resized_crop as the first augmentation, the training records are the files'
  // bytes and the transform decodes only each crop (decode_random_resized_crop, at the same DCT
  // scale: the same pixels as decoding whole and cropping). Val and test decode whole.
  const bool crop_first =
      !cfg.augment.empty() && config::parse_augment_item(cfg.augment.front()).spec->kind ==
                                  config::AugmentKind::random_resized_crop;
  std::shared_ptr<const Dataset> train_base = base;
  if (crop_first) train_base = std::make_shared<EncodedImages>(base);
  if (own_val) {
    out.train =
        subset(train_base, head(split_indices(base->size(), 0, 0, seed).train, cfg.limit_train));
    out.val = std::make_shared<ImageFolder>(root / "val", opts);
  } else {
    split_into(out, base, cfg, seed, labels_of(labels), !own_test, train_base);
  }
  if (own_test) {
    auto test = std::make_shared<ImageFolder>(root / "test", opts);
    LATHE_CHECK(test->classes() == out.info.classes, DataError,
                "{}: its class folders differ from {}'s; both need the same class subfolders",
                (root / "test").string(), (root / "train").string());
    std::vector<int64_t> all(static_cast<size_t>(test->size()));
    std::iota(all.begin(), all.end(), 0);
    out.test = subset(test, head(all, cfg.limit_test));
  }
  out.skipped = base->skipped();
  out.info.task = "classification";
  out.mean = cfg.mean.empty() ? std::vector<double>{0.485, 0.456, 0.406} : cfg.mean;  // ImageNet
  out.std = cfg.std.empty() ? std::vector<double>{0.229, 0.224, 0.225} : cfg.std;
  const std::vector<Transform> eval_steps = {transforms::resize_shorter(size),
                                             transforms::center_crop(size)};
  std::vector<Transform> train_steps =
      has_resized_crop(cfg.augment) ? std::vector<Transform>{} : eval_steps;
  std::vector<Transform> augment = parse_augment(cfg.augment, size);
  if (crop_first) {  // the decoding crop in place of random_resized_crop, with the same draws
    const double min_scale = config::parse_augment_item(cfg.augment.front()).argument;
    // An hflip right after it is done by the crop's resize (the same draw, no copy).
    std::optional<double> hflip;
    if (cfg.augment.size() > 1) {
      const config::Augment next = config::parse_augment_item(cfg.augment[1]);
      if (next.spec->kind == config::AugmentKind::hflip) {
        hflip = next.argument;
        augment.erase(augment.begin() + 1);
      }
    }
    augment.front() = transforms::decode_random_resized_crop(
        size, {min_scale, 1.0}, {3.0 / 4.0, 4.0 / 3.0}, opts.channels, opts.min_side,
        opts.max_pixels, hflip);
  }
  for (auto& t : augment) train_steps.push_back(std::move(t));
  out.train_transform = finish(train_steps, out.mean, out.std);
  out.eval_transform = finish(eval_steps, out.mean, out.std);
  out.info.channels = 3;
  out.info.side = size;
  return out;
}

DataSplits load_text(const config::DataSection& cfg) {
  std::shared_ptr<const Dataset> corpus;
  std::unique_ptr<Tokenizer> tok;
  if (cfg.tokenizer.empty()) {
    corpus = std::make_shared<ByteCorpus>(cfg.path, cfg.seq_len);
  } else {  // the whole file as one text, in the tokenizer's ids (no special tokens added)
    tok = load_tokenizer(cfg.tokenizer);
    corpus = std::make_shared<TokenCorpus>(
        tok->encode(detail::read_file(cfg.path, "text corpus"), false, cfg.path), cfg.path,
        cfg.seq_len);
  }
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
  out.info.task = "lm";
  out.info.vocab_size = tok ? tok->vocab_size() : 256;
  out.info.seq_len = cfg.seq_len;
  if (tok) {
    out.info.tokenizer = cfg.tokenizer;
    out.info.eos_id = tok->special_ids().eos.value_or(-1);
    out.info.pad_id = tok->special_ids().pad.value_or(-1);
  }
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
  out.info.classes = all->classes();
  if (cfg.test_path.empty()) {
    split_into(out, all, cfg, seed, all->labels(), true);
  } else {
    split_into(out, all, cfg, seed, all->labels(), false);
    auto test = std::make_shared<TextClassificationCsv>(
        read_csv(cfg.test_path, opts), cfg.text_column, cfg.target, tok, cfg.max_length, replace);
    LATHE_CHECK(test->classes() == out.info.classes, DataError,
                "{}: its labels differ from {}'s ({} vs {} classes)", cfg.test_path, cfg.path,
                test->classes().size(), out.info.classes.size());
    out.test = test;
  }
  out.info.task = "classification";
  out.info.vocab_size = tok.vocab_size();
  out.info.seq_len = cfg.max_length;
  out.skipped = table.skipped;
  return out;
}

}  // namespace

std::vector<Transform> parse_augment(const std::vector<std::string>& augment, int64_t size) {
  std::vector<Transform> out;
  for (const auto& item : augment) {
    const config::Augment a = config::parse_augment_item(item);
    switch (a.spec->kind) {
      case config::AugmentKind::random_crop:
        // Bounded by the crop itself: more padding than that only crops blank borders, and a
        // huge one would allocate a huge padded image per record.
        LATHE_CHECK(a.argument <= static_cast<double>(size), ConfigError,
                    "data.augment: '{}': the padding must be at most the image size {}", item,
                    size);
        out.push_back(transforms::random_crop(size, static_cast<int64_t>(a.argument)));
        break;
      case config::AugmentKind::hflip: out.push_back(transforms::horizontal_flip(a.argument)); break;
      case config::AugmentKind::random_resized_crop:
        out.push_back(transforms::random_resized_crop(size, {a.argument, 1.0}));
        break;
    }
  }
  return out;
}

DataSplits load_splits(const config::DataSection& cfg, uint64_t seed) {
  const Doing doing(fmt::format("loading the {} data at {}", cfg.source, cfg.path));
  DataSplits out;
  switch (config::source_spec(cfg.source).kind) {
    case config::SourceKind::idx: out = load_idx(cfg, seed); break;
    case config::SourceKind::csv: out = load_csv(cfg, seed); break;
    case config::SourceKind::image_folder: out = load_image_folder(cfg, seed); break;
    case config::SourceKind::text: out = load_text(cfg); break;
    case config::SourceKind::text_csv: out = load_text_csv(cfg, seed); break;
  }
  LATHE_CHECK(out.train && out.train->size() > 0, DataError,
              "{}: no training records left (limit_train {}, val_fraction {}, test_fraction {})",
              cfg.path, cfg.limit_train, cfg.val_fraction, cfg.test_fraction);
  out.info.source = cfg.source;
  out.info.path = cfg.path;
  if (out.skipped > 0)
    log::warn("{}: {} bad record(s) skipped (data.skip_bad_records)", cfg.path, out.skipped);
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

BatchSources make_batch_sources(const config::DataSection& cfg, const DataSplits& splits,
                                uint64_t seed, Shard shard) {
  BatchSources out;
  if (!splits.in_memory) {
    Loaders l = make_loaders(cfg, splits, seed, shard);
    out.train = std::move(l.train);
    out.val = std::move(l.val);
    out.test = std::move(l.test);
    return out;
  }
  const auto loader = [&](const std::shared_ptr<const Dataset>& part, int64_t batch,
                          bool train) -> std::unique_ptr<BatchSource> {
    const auto* tensors = dynamic_cast<const TensorSource*>(part.get());
    LATHE_CHECK(tensors != nullptr, DataError, "{}: an in-memory split is not a TensorSource",
                cfg.path);
    if (!train && tensors->size() == 0) return nullptr;
    auto l = std::make_unique<TensorLoader>(tensors->tensors(), batch, train, seed);
    if (shard.active()) l->set_shard({shard.rank, shard.world, /*pad=*/train});
    return l;
  };
  out.train = loader(splits.train, cfg.batch_size / std::max<int64_t>(shard.world, 1), true);
  out.val = loader(splits.val, cfg.eval_batch_size, false);
  out.test = loader(splits.test, cfg.eval_batch_size, false);
  return out;
}

}  // namespace lathe::data
