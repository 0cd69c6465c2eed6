// ClassificationMeter: device-side sums, one sync when the epoch's values are read.
#include "lathe/train/metrics.h"

#include <limits>

#include "lathe/core/error.h"

namespace lathe::train {

void ClassificationMeter::update(const at::Tensor& logits, const at::Tensor& targets,
                                 const at::Tensor& loss) {
  LATHE_CHECK(logits.dim() == 2 && targets.dim() == 1 && logits.size(0) == targets.size(0),
              TrainError, "classification wants logits (B, K) and targets (B), got {} and {}",
              logits.sizes(), targets.sizes());
  const int64_t b = targets.size(0);
  const at::Tensor batch_loss = loss.detach().to(at::kDouble) * static_cast<double>(b);
  const at::Tensor batch_correct = logits.detach().argmax(1).eq(targets).sum();  // ()
  loss_sum_ = loss_sum_.defined() ? loss_sum_ + batch_loss : batch_loss;
  correct_ = correct_.defined() ? correct_ + batch_correct : batch_correct;
  count_ += b;
}

void ClassificationMeter::reset() {
  loss_sum_ = at::Tensor();
  correct_ = at::Tensor();
  count_ = 0;
}

std::map<std::string, double> ClassificationMeter::compute() const {
  if (count_ == 0) {
    const double nan = std::numeric_limits<double>::quiet_NaN();
    return {{"loss", nan}, {"accuracy", nan}};
  }
  const auto n = static_cast<double>(count_);
  return {{"loss", loss_sum_.item<double>() / n},
          {"accuracy", static_cast<double>(correct_.item<int64_t>()) / n}};
}

}  // namespace lathe::train
