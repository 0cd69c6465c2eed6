// ProfileScope: names a region of code (a model part such as "layer1.0") in profiler traces;
// a single check when no profiler runs.
#pragma once

#include <string_view>

#include <ATen/record_function.h>

namespace lathe {

/// Marks the enclosing block as a user scope of LibTorch's profiler (what Python's
/// torch.profiler.record_function does): trainer.profile's trace shows it as a span and its
/// tables count the time spent inside. The zoo's models name their parts with it; a user
/// module can do the same in its forward:
///
///   at::Tensor Block::forward(const at::Tensor& x) {
///     const lathe::ProfileScope scope(label_);   // e.g. "encoder.layer.3"
///     ...
///   }
class ProfileScope {
 public:
  explicit ProfileScope(std::string_view name) : guard_(at::RecordScope::USER_SCOPE) {
    if (guard_.isActive()) guard_.before(name);
  }
  ProfileScope(const ProfileScope&) = delete;
  ProfileScope& operator=(const ProfileScope&) = delete;

 private:
  at::RecordFunction guard_;
};

}  // namespace lathe
