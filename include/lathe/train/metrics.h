// Epoch metrics for classification: exact loss mean and accuracy over every record seen.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include <ATen/core/Tensor.h>

namespace lathe::train {

/// Accumulates a classification epoch on the device (no sync per batch) and reports exact
/// values over all records: the loss mean weighted by batch size, and accuracy.
///
///   ClassificationMeter m;
///   m.update(logits, targets, loss);   // loss: the batch's mean loss
///   m.compute();                        // {"loss": 0.31, "accuracy": 0.89}
class ClassificationMeter {
 public:
  void update(const at::Tensor& logits, const at::Tensor& targets, const at::Tensor& loss);
  void reset();
  int64_t count() const { return count_; }
  /// {"loss", "accuracy"}; a non-finite loss is reported as is (callers decide).
  std::map<std::string, double> compute() const;

 private:
  at::Tensor loss_sum_;  ///< () sum of loss·batch over the epoch
  at::Tensor correct_;   ///< () number of correct top-1 predictions
  int64_t count_ = 0;
};

}  // namespace lathe::train
