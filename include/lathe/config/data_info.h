// DataInfo: what a run's loaded data says about the run — its task, input signature and classes.
// It fills a config's `auto` sizes (model.num_classes, in_features, ...) and the export signature.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace lathe::config {

/// The data's own description, made by the data area when it loads a config's data section:
///
///   const auto splits = lathe::data::load_splits(cfg.data, cfg.run.seed);
///   fmt::print("{}\n", splits.info.describe());  // "3 classes (barbera, ...), 13 features"
struct DataInfo {
  std::string source;                      ///< data.source it came from
  std::string path;                        ///< data.path (for messages)
  std::string task;                        ///< classification | regression | lm
  std::vector<std::string> classes;        ///< class names in id order (classification)
  int64_t channels = 0;                    ///< images: channels after the transforms
  int64_t side = 0;                        ///< images: the square side after the transforms
  int64_t num_features = 0;                ///< tables: features after preprocessing
  std::vector<std::string> feature_names;  ///< tables: one per feature ("col" or "col=category")
  int64_t vocab_size = 0;                  ///< text: 256 (bytes) or the WordPiece vocabulary
  int64_t seq_len = 0;                     ///< text: tokens per record
  std::string tokenizer;                   ///< text: the tokenizer's path; empty = bytes
  int64_t eos_id = -1, pad_id = -1;        ///< text: the tokenizer's eos and pad (-1 = none)

  /// One record's input shape: (C, H, W) images, (F) tables, (T) text; empty when unknown.
  std::vector<int64_t> input_shape() const;
  /// The number of model outputs the task needs: classes (classification), 1 (regression),
  /// vocab_size (lm); 0 when unknown.
  int64_t num_outputs() const;
  /// "3 classes (barbera, barolo, grignolino)"; long lists are cut after 8 names.
  std::string classes_text() const;
  /// One line for logs: task, signature and classes.
  std::string describe() const;
};

}  // namespace lathe::config
