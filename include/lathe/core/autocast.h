// AutocastGuard: an RAII autocast region with torch.autocast's semantics (state, nesting, cache).
#pragma once

#include <c10/core/DeviceType.h>
#include <c10/core/ScalarType.h>

namespace lathe {

/// Autocast on `device` set to `enabled` with `dtype` for the guard's lifetime, as Python's
/// `torch.autocast(device, dtype, enabled)`: the previous state is restored at the end, every
/// region (enabled or not) counts in autocast's nesting, and the cast cache is cleared when the
/// outermost region ends. Casts cached inside a region are therefore never seen after the
/// weights they were made from change (an optimizer step happens outside every region).
///
///   { lathe::AutocastGuard amp(c10::DeviceType::CUDA, at::kBFloat16, true); out = model(x); }
class AutocastGuard {
 public:
  AutocastGuard(c10::DeviceType device, c10::ScalarType dtype, bool enabled);
  ~AutocastGuard();
  AutocastGuard(const AutocastGuard&) = delete;
  AutocastGuard& operator=(const AutocastGuard&) = delete;

 private:
  c10::DeviceType device_;
  bool prev_enabled_;
  c10::ScalarType prev_dtype_;
};

}  // namespace lathe
