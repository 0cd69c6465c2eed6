// DeviceFeed: one batch ahead on a side stream (device-generic c10 streams and events, so this
// compiles and runs without CUDA; the CPU takes the direct path).
#include "lathe/data/device_feed.h"

#include <ATen/ATen.h>
#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>

#include "lathe/core/error.h"

namespace lathe::data {
namespace {

at::Tensor place(const at::Tensor& t, c10::Device device, bool channels_last) {
  at::Tensor out = t.device() == device ? t : t.to(device, /*non_blocking=*/t.is_pinned());
  // to(), not contiguous(): a one-channel batch (B, 1, H, W) already counts as contiguous in
  // both formats, so contiguous() keeps its NCHW strides and convolutions would stay NCHW;
  // to() gives it NHWC strides (as Python's x.to(memory_format=torch.channels_last)).
  if (channels_last && out.dim() == 4)
    out = out.to(out.options(), /*non_blocking=*/false, /*copy=*/false,
                 at::MemoryFormat::ChannelsLast);
  return out;
}

}  // namespace

/// A batch copied on the side stream, and the event the compute stream waits on.
struct DeviceFeed::Copy {
  Batch batch;
  c10::Stream stream;
  c10::Event done;
  Copy(c10::Stream s) : stream(s), done(s.device_type()) {}
};

DeviceFeed::DeviceFeed(BatchSource& source, c10::Device device, int64_t first, bool channels_last)
    : source_(source), device_(device), channels_last_(channels_last), next_(first) {
  if (device_.is_cuda() && next_ < source_.num_batches()) start(next_);
}

DeviceFeed::~DeviceFeed() = default;

void DeviceFeed::start(int64_t i) {
  c10::impl::VirtualGuardImpl impl(device_.type());
  const c10::Device dev(device_.type(),
                        device_.has_index() ? device_.index() : impl.getDevice().index());
  if (!ahead_) ahead_ = std::make_unique<Copy>(impl.getStreamFromGlobalPool(dev));
  // Loaders on CUDA hand out page-locked batches (DataLoader's workers collate into them,
  // TensorLoader gathers into them), so the copy is asynchronous; a batch that is not pinned is
  // copied as it is rather than pinned here, on the training thread.
  const Batch b = source_.batch(i);
  c10::StreamGuard on_side(ahead_->stream);
  ahead_->batch = {place(b.inputs, dev, channels_last_), place(b.targets, dev, false)};
  ahead_->done.record(ahead_->stream);
}

Batch DeviceFeed::next() {
  const int64_t i = next_;
  LATHE_CHECK(i < source_.num_batches(), DataError,
              "DeviceFeed: batch {} asked for, the source has {}", i, source_.num_batches());
  ++next_;
  if (!device_.is_cuda()) {
    const Batch b = source_.batch(i);
    return {place(b.inputs, device_, channels_last_), place(b.targets, device_, false)};
  }
  c10::impl::VirtualGuardImpl impl(device_.type());
  const c10::Stream compute = impl.getStream(ahead_->stream.device());
  ahead_->done.block(compute);  // the compute stream waits for the copy, the host does not
  Batch b = std::move(ahead_->batch);
  // Memory allocated on the side stream is used on the compute stream: tell the allocator.
  b.inputs.record_stream(compute);
  b.targets.record_stream(compute);
  if (next_ < source_.num_batches()) start(next_);
  return b;
}

}  // namespace lathe::data
