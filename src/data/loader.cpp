// DataLoader: per-epoch worker threads claiming whole batches, in-order hand-out, pinned collation.
#include "lathe/data/loader.h"

#include <dlfcn.h>

#include <algorithm>
#include <numeric>
#include <string_view>

#include <ATen/CPUGeneratorImpl.h>
#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/from_blob.h>
#include <ATen/ops/randperm.h>
#include <ATen/ops/stack.h>

#include "lathe/core/error.h"

namespace lathe::data {
namespace {

/// Seed stream of the loader's order and of each epoch's transforms (distinct from the splits').
constexpr uint64_t kOrderStream = 1000;
constexpr uint64_t kTransformStream = 0x7A5F0000;

/// Stacks tensors of one shape into (B, ...), in page-locked memory when `pin`.
at::Tensor collate(const std::vector<at::Tensor>& parts, bool pin, int64_t first_record) {
  const at::Tensor& first = parts.front();
  for (size_t i = 1; i < parts.size(); ++i)
    LATHE_CHECK(parts[i].sizes() == first.sizes() && parts[i].scalar_type() == first.scalar_type(),
                DataError,
                "cannot collate a batch: record {} has shape {} ({}) but the batch's first record "
                "{} has {} ({}); make every record the same shape (resize, crop, pad)",
                first_record + static_cast<int64_t>(i), parts[i].sizes(),
                c10::toString(parts[i].scalar_type()), first_record, first.sizes(),
                c10::toString(first.scalar_type()));
  if (!pin) return at::stack(parts);
  std::vector<int64_t> shape{static_cast<int64_t>(parts.size())};
  shape.insert(shape.end(), first.sizes().begin(), first.sizes().end());
  at::Tensor out = at::empty(shape, first.options().pinned_memory(true));  // (B, ...)
  at::stack_out(out, parts);
  return out;
}

}  // namespace

namespace detail {

void single_threaded_ops() {
  // torch's CPU kernels parallelise with OpenMP, whose thread count is per thread: set it to 1
  // for this thread only (at::set_num_threads would also change the default of threads created
  // later). libgomp is already loaded by libtorch_cpu; a build without OpenMP has no symbol.
  using SetThreads = void (*)(int);
  static const auto omp_set =
      reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "omp_set_num_threads"));
  if (omp_set != nullptr) omp_set(1);
}

}  // namespace detail

int default_num_workers() {
  const auto hw = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  return std::clamp(hw / 2, 1, 8);
}

DataLoader::DataLoader(std::shared_ptr<const Dataset> data, LoaderOptions options)
    : data_(std::move(data)), options_(std::move(options)) {
  LATHE_CHECK(data_ != nullptr, DataError, "DataLoader: no dataset given");
  LATHE_CHECK(options_.batch_size > 0, DataError, "batch size must be positive, got {}",
              options_.batch_size);
  LATHE_CHECK(options_.prefetch > 0, DataError, "prefetch must be positive, got {}",
              options_.prefetch);
  LATHE_CHECK(options_.num_workers >= -1, DataError,
              "num_workers must be -1 (default), 0 (inline) or positive, got {}",
              options_.num_workers);
  workers_count_ = options_.num_workers < 0 ? default_num_workers() : options_.num_workers;
  workers_count_ =
      static_cast<int>(std::min<int64_t>(workers_count_, std::max<int64_t>(num_batches(), 1)));
  pin_ = options_.pin_memory && at::globalContext().hasCUDA();
  restore({0, 0});
}

DataLoader::~DataLoader() { stop_workers(); }

int64_t DataLoader::num_batches() const {
  const int64_t n = shard_size(data_->size(), options_.shard), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

at::Tensor DataLoader::epoch_order(int64_t epoch) const {
  const auto opts = at::TensorOptions().dtype(at::kLong);
  if (!options_.shuffle) return shard_order(at::arange(data_->size(), opts), options_.shard);
  auto gen = at::make_generator<at::CPUGeneratorImpl>(
      derive_seed(options_.seed, kOrderStream + static_cast<uint64_t>(epoch)));
  return shard_order(at::randperm(data_->size(), gen, opts), options_.shard);  // (N)
}

void DataLoader::restore(LoaderPosition position) {
  LATHE_CHECK(position.epoch >= 0 && position.batch >= 0 && position.batch <= num_batches(),
              DataError,
              "loader position (epoch {}, batch {}) out of range: an epoch has {} "
              "batches; was the checkpoint made with another dataset or batch size?",
              position.epoch, position.batch, num_batches());
  stop_workers();
  if (position.epoch != epoch_ || order_.empty()) {
    const at::Tensor order = epoch_order(position.epoch);
    const auto* p = order.data_ptr<int64_t>();
    order_.assign(p, p + order.numel());
  }
  epoch_ = position.epoch;
  taken_ = position.batch;
  next_to_make_ = taken_;
}

Batch DataLoader::make_batch(int64_t b) const {
  const int64_t start = b * options_.batch_size;
  const int64_t len =
      std::min(options_.batch_size, static_cast<int64_t>(order_.size()) - start);
  std::vector<at::Tensor> inputs, targets;
  inputs.reserve(static_cast<size_t>(len));
  targets.reserve(static_cast<size_t>(len));
  const uint64_t epoch_seed =
      derive_seed(options_.seed, kTransformStream + static_cast<uint64_t>(epoch_));
  for (int64_t k = 0; k < len; ++k) {
    const int64_t record = order_[static_cast<size_t>(start + k)];
    try {
      Example ex = data_->get(record);
      if (options_.transform) {
        Rng rng(derive_seed(epoch_seed, static_cast<uint64_t>(record)));
        ex.input = options_.transform(std::move(ex.input), rng);
      }
      inputs.push_back(std::move(ex.input));
      targets.push_back(std::move(ex.target));
    } catch (const std::exception& e) {
      // The record's file, unless the message names it already (a transform that decodes
      // bytes knows no file name).
      const std::string file = data_->origin(record);
      const bool named = file.empty() || std::string_view(e.what()).find(file) != std::string::npos;
      throw DataError(fmt::format("record {}{} (batch {} of epoch {}): {}", record,
                                  named ? "" : " (" + file + ")", b, epoch_, e.what()));
    }
  }
  return {collate(inputs, pin_, order_[static_cast<size_t>(start)]),
          collate(targets, pin_, order_[static_cast<size_t>(start)])};
}

void DataLoader::start_workers() {
  stop_ = false;
  for (int w = 0; w < workers_count_; ++w) threads_.emplace_back([this] { worker_loop(); });
}

void DataLoader::stop_workers() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
  threads_.clear();
  ready_.clear();  // batches made ahead are dropped: the next start makes them again from taken_
  next_to_make_ = taken_;
  stop_ = false;
}

void DataLoader::worker_loop() {
  at::init_num_threads();
  detail::single_threaded_ops();  // N workers use N cores, not N × intra-op threads
  const int64_t end = num_batches();
  const int64_t window = static_cast<int64_t>(workers_count_) * options_.prefetch;
  for (;;) {
    int64_t b = 0;
    {
      std::unique_lock<std::mutex> lock(mu_);
      cv_.wait(lock,
               [&] { return stop_ || next_to_make_ >= end || next_to_make_ < taken_ + window; });
      if (stop_ || next_to_make_ >= end) return;
      b = next_to_make_++;
    }
    Slot slot;
    try {
      slot.batch = make_batch(b);
    } catch (...) {
      slot.error = std::current_exception();
    }
    {
      std::lock_guard<std::mutex> lock(mu_);
      ready_.emplace(b, std::move(slot));
    }
    cv_.notify_all();
  }
}

std::optional<Batch> DataLoader::next() {
  if (taken_ >= num_batches()) {
    stop_workers();
    return std::nullopt;
  }
  if (workers_count_ == 0) {
    Batch batch = make_batch(taken_);
    ++taken_;
    return batch;
  }
  if (threads_.empty()) start_workers();
  Slot slot;
  {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return ready_.count(taken_) != 0; });
    auto it = ready_.find(taken_);
    slot = std::move(it->second);
    ready_.erase(it);
    if (!slot.error) ++taken_;  // after an error the position stays at the failed batch
  }
  cv_.notify_all();
  if (slot.error) {
    stop_workers();
    std::rethrow_exception(slot.error);
  }
  return std::move(slot.batch);
}

Batch DataLoader::batch(int64_t i) {
  LATHE_CHECK(i >= 0 && i < num_batches(), DataError, "batch {} out of range [0, {})", i,
              num_batches());
  if (i != taken_) restore({epoch_, i});
  return *next();
}

Batch to_device(const Batch& batch, c10::Device device) {
  if (device.is_cpu()) return batch;
  return {batch.inputs.to(device, /*non_blocking=*/batch.inputs.is_pinned()),
          batch.targets.to(device, /*non_blocking=*/batch.targets.is_pinned())};
}

}  // namespace lathe::data
