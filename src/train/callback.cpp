// Built-in callbacks: console progress, JSONL / CSV / TensorBoard loggers, early stopping, LR
// monitor.
#include "lathe/train/callback.h"

#include <unistd.h>

#include <array>
#include <cstring>
#include <cmath>
#include <ctime>
#include <limits>
#include <set>

#include <nlohmann/json.hpp>
#include <torch/nn/module.h>

#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/optim/optimizer.h"
#include "lathe/train/trainer.h"

namespace lathe::train {
namespace {

std::string value_text(double v) { return std::isfinite(v) ? fmt::format("{}", v) : ""; }

}  // namespace

// ---- progress ----------------------------------------------------------------------------------

ProgressCallback::ProgressCallback(std::string mode) : mode_(std::move(mode)) {}

void ProgressCallback::on_train_epoch_start(Trainer& t, int64_t epoch) {
  epoch_start_ = std::chrono::steady_clock::now();
  epoch_samples_ = 0;
  postfix_.clear();
  const bool bar = mode_ == "bar" || (mode_ == "auto" && log::is_tty(stderr));
  bar_ = std::make_unique<log::ProgressBar>(
      fmt::format("epoch {}/{}", epoch, t.config().max_epochs), 1, stderr, bar);
}

void ProgressCallback::on_train_step_end(Trainer& t, int64_t batch, int64_t batches) {
  epoch_samples_ += t.last_batch_size();
  if (bar_ == nullptr || !bar_->active()) return;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - epoch_start_).count();
  bar_->set_total(batches);
  bar_->update(batch + 1, fmt::format("{:.0f} samples/s {}", secs > 0 ? epoch_samples_ / secs : 0.0,
                                      postfix_));
}

void ProgressCallback::on_log(Trainer& t, const LogEvent& e) {
  if (e.kind == "step") {
    const auto loss = e.values.find("train/loss");
    postfix_ = fmt::format("loss {:.4f} lr {:.2e}", loss != e.values.end() ? loss->second : NAN,
                           t.last_lr());
    if (mode_ == "plain")
      log::info("epoch {} step {}: loss {:.4f} lr {:.3g}", e.epoch, e.step,
                loss != e.values.end() ? loss->second : NAN, t.last_lr());
  }
  if (e.kind == "epoch" && mode_ != "none") {
    if (bar_) bar_->finish();
    const auto get = [&](const char* k) {
      const auto it = e.values.find(k);
      return it == e.values.end() ? NAN : it->second;
    };
    std::string line = fmt::format("epoch {}/{}: train loss {:.4f}", e.epoch,
                                   t.config().max_epochs, get("train_epoch/loss"));
    if (!std::isnan(get("train_epoch/accuracy")))
      line += fmt::format(" acc {:.4f}", get("train_epoch/accuracy"));
    if (!std::isnan(get("val/loss"))) line += fmt::format(" | val loss {:.4f}", get("val/loss"));
    for (const char* k : {"val/accuracy", "val/perplexity", "val/r2", "val/rmse"})
      if (!std::isnan(get(k))) line += fmt::format(" {} {:.4f}", std::string(k).substr(4), get(k));
    if (!std::isnan(get("val_ema/loss")))
      line += fmt::format(" | ema val loss {:.4f}", get("val_ema/loss"));
    for (const char* k : {"val_ema/accuracy", "val_ema/perplexity", "val_ema/r2", "val_ema/rmse"})
      if (!std::isnan(get(k))) line += fmt::format(" {} {:.4f}", std::string(k).substr(8), get(k));
    line += fmt::format(" | lr {:.2e} | {:.1f}s", get("lr"), get("time_s"));
    log::info("{}", line);
  }
}

void ProgressCallback::on_train_epoch_end(Trainer&, int64_t) {
  if (bar_) bar_->finish();
}

// ---- metrics.jsonl -----------------------------------------------------------------------------

JsonlLogger::JsonlLogger(const std::filesystem::path& file, bool append) : file_(file) {
  if (file.has_parent_path()) std::filesystem::create_directories(file.parent_path());
  out_.open(file, append ? std::ios::app : std::ios::trunc);
  LATHE_CHECK(out_.is_open(), IoError, "{}: cannot open the metrics log for writing",
              file.string());
}

void JsonlLogger::on_log(Trainer&, const LogEvent& e) {
  nlohmann::ordered_json j;
  j["kind"] = e.kind;
  j["epoch"] = e.epoch;
  j["step"] = e.step;
  for (const auto& [k, v] : e.values) j[k] = std::isfinite(v) ? nlohmann::ordered_json(v) : nullptr;
  out_ << j.dump() << '\n';
  out_.flush();
  LATHE_CHECK(out_.good(), IoError, "{}: write failed (disk full?)", file_.string());
}

// ---- metrics.csv -------------------------------------------------------------------------------

CsvLogger::CsvLogger(std::filesystem::path file, std::vector<LogEvent> earlier)
    : file_(std::move(file)), rows_(std::move(earlier)) {}

void CsvLogger::on_log(Trainer&, const LogEvent& e) {
  rows_.push_back(e);
  if (e.kind == "epoch" || e.kind == "test") flush();
}

void CsvLogger::flush() const {
  std::set<std::string> names;
  for (const auto& r : rows_)
    for (const auto& [k, v] : r.values) names.insert(k);
  std::string text = "kind,epoch,step";
  for (const auto& n : names) text += "," + n;
  text += "\n";
  for (const auto& r : rows_) {
    text += fmt::format("{},{},{}", r.kind, r.epoch, r.step);
    for (const auto& n : names) {
      const auto it = r.values.find(n);
      text += "," + (it == r.values.end() ? std::string() : value_text(it->second));
    }
    text += "\n";
  }
  write_file_atomic(file_, text);
}

// ---- TensorBoard -------------------------------------------------------------------------------

namespace {

const std::array<uint32_t, 256>& crc32c_table() {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  return table;
}

// Minimal protobuf encoding of tensorflow.Event { wall_time=1 (double), step=2 (int64),
// file_version=3 (string), summary=5 (Summary { value=1 (Value { tag=1, simple_value=2 })}) }.
void put_varint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>((v & 0x7F) | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}
template <class T>
void put_fixed(std::string& out, T v) {
  char bytes[sizeof(T)];
  std::memcpy(bytes, &v, sizeof(T));  // little-endian host, as protobuf's fixed encodings
  out.append(bytes, sizeof(T));
}
void put_bytes(std::string& out, int field, const std::string& bytes) {
  put_varint(out, (static_cast<uint64_t>(field) << 3) | 2);
  put_varint(out, bytes.size());
  out += bytes;
}
std::string event_header(double wall_time, int64_t step) {
  std::string e;
  put_varint(e, (1 << 3) | 1);
  put_fixed(e, wall_time);
  put_varint(e, 2 << 3);
  put_varint(e, static_cast<uint64_t>(step));
  return e;
}
double now_seconds() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch()).count();
}

}  // namespace

uint32_t masked_crc32c(const void* data, size_t size) {
  const auto& table = crc32c_table();
  uint32_t c = 0xFFFFFFFFu;
  const auto* p = static_cast<const uint8_t*>(data);
  for (size_t i = 0; i < size; ++i) c = table[(c ^ p[i]) & 0xFF] ^ (c >> 8);
  c ^= 0xFFFFFFFFu;
  return ((c >> 15) | (c << 17)) + 0xA282EAD8u;
}

TensorBoardLogger::TensorBoardLogger(const std::filesystem::path& dir) {
  std::filesystem::create_directories(dir);
  std::array<char, 256> host{};
  ::gethostname(host.data(), host.size() - 1);
  file_ = dir / fmt::format("events.out.tfevents.{}.{}", static_cast<int64_t>(std::time(nullptr)),
                            host.data());
  out_.open(file_, std::ios::binary | std::ios::trunc);
  LATHE_CHECK(out_.is_open(), IoError, "{}: cannot create the TensorBoard event file",
              file_.string());
  std::string first = event_header(now_seconds(), 0);
  put_bytes(first, 3, "brain.Event:2");
  write_record(first);
}

void TensorBoardLogger::write_record(const std::string& event) {
  std::string frame;
  put_fixed(frame, static_cast<uint64_t>(event.size()));
  const uint32_t len_crc = masked_crc32c(frame.data(), 8);
  put_fixed(frame, len_crc);
  frame += event;
  put_fixed(frame, masked_crc32c(event.data(), event.size()));
  out_.write(frame.data(), static_cast<std::streamsize>(frame.size()));
  out_.flush();
  LATHE_CHECK(out_.good(), IoError, "{}: write failed (disk full?)", file_.string());
}

void TensorBoardLogger::on_log(Trainer&, const LogEvent& e) {
  std::string summary;
  for (const auto& [tag, v] : e.values) {
    if (!std::isfinite(v) || tag == "time_s") continue;
    std::string value;
    put_bytes(value, 1, tag);
    put_varint(value, (2 << 3) | 5);
    put_fixed(value, static_cast<float>(v));
    put_bytes(summary, 1, value);
  }
  if (summary.empty()) return;
  std::string event = event_header(now_seconds(), e.step);
  put_bytes(event, 5, summary);
  write_record(event);
}

// ---- early stopping ----------------------------------------------------------------------------

EarlyStopping::EarlyStopping(std::string monitor, std::string mode, int64_t patience,
                             double min_delta)
    : monitor_(std::move(monitor)),
      mode_(std::move(mode)),
      patience_(patience),
      min_delta_(std::abs(min_delta)),
      best_(mode_ == "max" ? -std::numeric_limits<double>::infinity()
                           : std::numeric_limits<double>::infinity()) {}

void EarlyStopping::on_fit_start(Trainer& t) {
  if (mode_ != "auto") return;
  mode_ = t.task().higher_is_better(monitor_) ? "max" : "min";
  if (wait_ == 0 && std::isinf(best_))  // nothing seen yet (a resumed state keeps its best)
    best_ = mode_ == "max" ? -std::numeric_limits<double>::infinity()
                           : std::numeric_limits<double>::infinity();
}

void EarlyStopping::on_validation_end(Trainer& t, const Metrics& val) {
  const auto it = val.find(monitor_);
  if (it == val.end()) {
    std::string have;
    for (const auto& [k, v] : val) have += (have.empty() ? "" : ", ") + k;
    throw ConfigError(fmt::format(
        "trainer.early_stopping.monitor: '{}' is not a validation metric of this task; "
        "available: {}",
        monitor_, have));
  }
  const double v = it->second;
  const bool improved = mode_ == "max" ? v > best_ + min_delta_ : v < best_ - min_delta_;
  if (improved) {
    best_ = v;
    wait_ = 0;
    return;
  }
  if (++wait_ >= patience_)
    t.request_stop(fmt::format("early stopping: {} did not improve on {:.6g} for {} validations",
                               monitor_, best_, wait_));
}

std::string EarlyStopping::state_json() const {
  return nlohmann::json{{"best", best_}, {"wait", wait_}}.dump();
}

void EarlyStopping::load_state_json(const std::string& json) {
  const auto j = nlohmann::json::parse(json);
  best_ = j.at("best").is_null() ? best_ : j.at("best").get<double>();
  wait_ = j.at("wait").get<int64_t>();
}

// ---- learning-rate monitor ---------------------------------------------------------------------

void LearningRateMonitor::on_train_step_end(Trainer& t, int64_t, int64_t) {
  if (t.global_step() % t.config().log_every_n_steps != 0) return;
  Metrics values;
  auto& bundle = t.optimizer();
  for (size_t g = 0; g < bundle.optimizer->param_groups().size(); ++g) {
    const auto v = optim::group_values(bundle, g);
    values[fmt::format("lr/group{}", g)] = v.lr;
    values[fmt::format("momentum/group{}", g)] = v.momentum;
    values[fmt::format("weight_decay/group{}", g)] = v.weight_decay;
  }
  t.log("lr", values);
}

// ---- unfreezing --------------------------------------------------------------------------------

void UnfreezeCallback::on_train_epoch_start(Trainer& t, int64_t epoch) {
  if (epoch < epoch_) return;  // from that epoch on (also after resuming past it)
  int64_t count = 0;
  for (auto& item : t.model().ptr()->named_parameters()) {
    if (item.value().requires_grad()) continue;
    for (const auto& p : patterns_) {
      if (config::matches_pattern(item.key(), p)) {
        item.value().set_requires_grad(true);
        ++count;
        break;
      }
    }
  }
  if (count > 0) log::info("epoch {}: unfroze {} parameter tensors", epoch, count);
}

}  // namespace lathe::train
