// Training checkpoints: snapshot, atomic folder write, retention and links, async writer, resume;
// and the fine-tuning entry (pretrained weights, key remapping, freezing).
#include "lathe/ckpt/checkpoint.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <thread>
#include <cmath>
#include <fstream>
#include <optional>
#include <sstream>

#include <ATen/ATen.h>
#include <ATen/Context.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/cuda.h>
#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include "lathe/ckpt/safetensors.h"
#include "lathe/ckpt/state_dict.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/core/log.h"
#include "lathe/train/trainer.h"

namespace lathe::ckpt {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

/// Everything a checkpoint holds, copied off the device (so it can be written on another thread).
struct Snapshot {
  NamedTensors model;
  NamedTensors ema;  ///< trainer.ema's weights; empty without
  std::string optimizer_bytes;
  NamedTensors rng;
  std::string state_json;
  std::map<std::string, std::string> model_metadata;
};

std::vector<c10::Device> generator_devices() {
  std::vector<c10::Device> devices{c10::Device(c10::kCPU)};
  if (torch::cuda::is_available())
    for (int64_t i = 0; i < static_cast<int64_t>(torch::cuda::device_count()); ++i)
      devices.emplace_back(c10::kCUDA, static_cast<c10::DeviceIndex>(i));
  return devices;
}

NamedTensors rng_states() {
  NamedTensors out;
  for (const auto& d : generator_devices()) {
    auto gen = at::globalContext().defaultGenerator(d);
    std::lock_guard<std::mutex> lock(gen.mutex());
    out.emplace_back(d.str(), gen.get_state());
  }
  return out;
}

void set_rng_states(const NamedTensors& states, const fs::path& file) {
  for (const auto& [name, state] : states) {
    std::optional<c10::Device> d;
    try {
      d.emplace(name);
    } catch (const c10::Error&) {
    }
    LATHE_CHECK(d && (d->is_cpu() || d->is_cuda()) && state.scalar_type() == at::kByte &&
                    state.dim() == 1,
                CheckpointError,
                "{}: tensor '{}' is not a generator state (expected names like 'cpu' or 'cuda:0' "
                "holding 1-d uint8 states); the file is damaged: resume from another checkpoint",
                file.string(), name);
    if (d->is_cuda() && (!torch::cuda::is_available() ||
                         d->index() >= static_cast<int64_t>(torch::cuda::device_count()))) {
      log::warn("{}: generator state for {} skipped (no such device here)", file.string(), name);
      continue;
    }
    auto gen = at::globalContext().defaultGenerator(*d);
    std::lock_guard<std::mutex> lock(gen.mutex());
    try {
      gen.set_state(state);
    } catch (const c10::Error& e) {
      throw CheckpointError(fmt::format(
          "{}: the generator state '{}' does not fit this LibTorch's {} generator ({}); resume "
          "from another checkpoint",
          file.string(), name, d->str(), e.what_without_backtrace()));
    }
  }
}

Snapshot take_snapshot(train::Trainer& t, const std::string& config_yaml,
                       const std::string& extra_json) {
  Snapshot s;
  for (const auto& [name, tensor] : state_dict(*t.model().ptr()))
    s.model.emplace_back(name, tensor.detach().to(c10::kCPU, /*non_blocking=*/false, /*copy=*/true));
  for (const auto& [name, tensor] : s.model)
    LATHE_CHECK(!tensor.is_floating_point() || tensor.isfinite().all().item<bool>(), TrainError,
                "tensor '{}' holds NaN or inf at step {}: not saving a checkpoint of broken "
                "weights (the previous checkpoints are kept)",
                name, t.global_step());
  train::TrainState ts = t.state();
  s.optimizer_bytes = std::move(ts.optimizer);
  s.ema = std::move(ts.ema);
  s.rng = rng_states();

  json state;
  state["format_version"] = kCheckpointFormatVersion;
  state["epoch"] = ts.progress.epoch;
  state["step"] = ts.progress.step;
  state["batch_in_epoch"] = ts.progress.batch_in_epoch;
  state["scaler"] = {{"scale", ts.scaler.scale}, {"growth_tracker", ts.scaler.growth_tracker}};
  const auto& p = ts.plateau;
  state["plateau"] = {{"best", p.best}, {"has_best", p.has_best}, {"bad", p.bad}, {"scale", p.scale}};
  json callbacks = json::object();
  for (const auto& [name, st] : ts.callbacks) callbacks[name] = json::parse(st);
  state["callbacks"] = callbacks;
  state["extra"] = json::parse(extra_json);
  state["config"] = config_yaml;
  s.state_json = state.dump(2) + "\n";
  s.model_metadata = {{"format", "pt"},
                      {"lathe_checkpoint_version", std::to_string(kCheckpointFormatVersion)},
                      {"lathe_step", std::to_string(ts.progress.step)}};
  return s;
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

/// Fault injection for the crash tests: LATHE_FAULT_CHECKPOINT_PAUSE="MS@STEP" holds every
/// checkpoint write of step ≥ STEP for MS milliseconds half done (weights written, state.json
/// not yet), so that a test can kill the process in the middle of a write. Unset (always,
/// outside those tests): nothing.
void pause_for_crash_tests(int64_t step) {
  static const char* spec = std::getenv("LATHE_FAULT_CHECKPOINT_PAUSE");
  if (spec == nullptr) return;
  const std::string s(spec);
  const auto at = s.find('@');
  const int64_t from = at == std::string::npos ? 0 : std::atoll(s.c_str() + at + 1);
  if (step >= from) std::this_thread::sleep_for(std::chrono::milliseconds(std::atoll(spec)));
}

/// Writes a snapshot into a temporary sibling folder, then renames it to `folder`.
void write_snapshot(const Snapshot& s, const fs::path& folder) {
  const fs::path parent = folder.parent_path();
  fs::create_directories(parent);
  const fs::path tmp = parent / fmt::format(".tmp-{}-{}", folder.filename().string(), ::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  fs::create_directories(tmp);
  try {
    save_safetensors(tmp / "model.safetensors", s.model, s.model_metadata);
    if (!s.ema.empty()) save_safetensors(tmp / kEmaWeightsFile, s.ema, s.model_metadata);
    {
      AtomicFile f(tmp / "optimizer.pt");
      f.write(s.optimizer_bytes);
      f.commit();
    }
    save_safetensors(tmp / "rng.safetensors", s.rng);
    pause_for_crash_tests(std::stoll(s.model_metadata.at("lathe_step")));
    write_file_atomic(tmp / "state.json", s.state_json);  // last: its presence marks completeness
    fs::remove_all(folder, ec);
    fs::rename(tmp, folder);
    fsync_dir(parent);
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

/// Points parent/link at target (a sibling folder name), atomically.
void set_link(const fs::path& parent, const std::string& link, const std::string& target) {
  const fs::path tmp = parent / fmt::format(".{}.tmp-{}", link, ::getpid());
  std::error_code ec;
  fs::remove(tmp, ec);
  fs::create_directory_symlink(target, tmp);
  fs::rename(tmp, parent / link);
}

std::string step_folder(int64_t step) { return fmt::format("step-{:08d}", step); }

json read_state(const fs::path& folder) {
  const fs::path file = folder / "state.json";
  LATHE_CHECK(fs::is_regular_file(file), CheckpointError,
              "{}: not a complete lathe checkpoint (no state.json); pick another checkpoint "
              "folder",
              folder.string());
  std::ifstream in(file);
  json state;
  try {
    state = json::parse(in);
  } catch (const json::exception& e) {
    throw CheckpointError(fmt::format(
        "{}: unreadable or truncated ({}); resume from another checkpoint", file.string(),
        e.what()));
  }
  LATHE_CHECK(state.is_object(), CheckpointError,
              "{}: malformed: expected a JSON object, found {}; resume from another checkpoint",
              file.string(), state.type_name());
  const auto version = state.find("format_version");
  LATHE_CHECK(version != state.end() && version->is_number_integer() &&
                  version->get<int>() == kCheckpointFormatVersion,
              CheckpointError,
              "{}: checkpoint format version {} but this lathe reads version {}; resume it with "
              "the lathe that wrote it",
              file.string(), version == state.end() ? "(none)" : version->dump(),
              kCheckpointFormatVersion);
  return state;
}

/// The TrainState a checkpoint's state.json and optimizer.pt describe; a missing or mistyped
/// field is a CheckpointError naming the file and the field.
train::TrainState parse_state(const json& state, const fs::path& file) {
  train::TrainState ts;
  try {
    ts.progress.epoch = state.at("epoch").get<int64_t>();
    ts.progress.step = state.at("step").get<int64_t>();
    ts.progress.batch_in_epoch = state.at("batch_in_epoch").get<int64_t>();
    ts.scaler = {state.at("scaler").at("scale").get<double>(),
                 state.at("scaler").at("growth_tracker").get<int64_t>()};
    const auto& pl = state.at("plateau");
    ts.plateau = {pl.at("best").get<double>(), pl.at("has_best").get<bool>(),
                  pl.at("bad").get<int64_t>(), pl.at("scale").get<double>()};
    for (const auto& [name, st] : state.at("callbacks").items()) ts.callbacks[name] = st.dump();
  } catch (const json::exception& e) {
    // nlohmann's messages name the field's JSON path only in part: say what was expected.
    throw CheckpointError(fmt::format(
        "{}: malformed state.json: {}; expected integer epoch, step and batch_in_epoch, "
        "scaler {{scale, growth_tracker}}, plateau {{best, has_best, bad, scale}} and a "
        "callbacks object; resume from another checkpoint",
        file.string(), e.what()));
  }
  LATHE_CHECK(ts.progress.epoch >= 0 && ts.progress.step >= 0 && ts.progress.batch_in_epoch >= 0,
              CheckpointError, "{}: malformed state.json: negative epoch, step or batch_in_epoch",
              file.string());
  return ts;
}

}  // namespace

void save_checkpoint(train::Trainer& trainer, const fs::path& folder,
                     const std::string& config_yaml, const std::string& extra_json) {
  write_snapshot(take_snapshot(trainer, config_yaml, extra_json), folder);
}

void load_checkpoint(train::Trainer& t, const fs::path& folder) {
  const json state = read_state(folder);
  train::TrainState ts = parse_state(state, folder / "state.json");
  load_weights(*t.model().ptr(), folder / "model.safetensors", /*strict=*/true);

  const fs::path opt_file = folder / "optimizer.pt";
  LATHE_CHECK(fs::is_regular_file(opt_file), CheckpointError,
              "{}: missing; resume from another checkpoint", opt_file.string());
  {
    std::ifstream in(opt_file, std::ios::binary);
    std::ostringstream bytes;
    bytes << in.rdbuf();
    LATHE_CHECK(in.good() || in.eof(), CheckpointError, "{}: cannot be read", opt_file.string());
    ts.optimizer = bytes.str();
  }
  if (const fs::path ema_file = folder / kEmaWeightsFile; fs::exists(ema_file))
    ts.ema = load_safetensors(ema_file).tensors;
  try {
    t.load_state(ts);
  } catch (const train::StateMismatch& e) {
    const fs::path file = e.part() == "optimizer" ? opt_file
                          : e.part() == "ema"     ? folder / kEmaWeightsFile
                                                  : folder / "state.json";
    throw CheckpointError(fmt::format("{}: {}", file.string(), e.what()));
  }
  const fs::path rng_file = folder / "rng.safetensors";
  set_rng_states(load_safetensors(rng_file).tensors, rng_file);
  log::info("resumed from {} (epoch {}, step {}, batch {} of the epoch)", folder.string(),
            t.progress().epoch + 1, t.progress().step, t.progress().batch_in_epoch);
}

int64_t checkpoint_step(const fs::path& folder) {
  return parse_state(read_state(folder), folder / "state.json").progress.step;
}

fs::path resolve_resume(const std::string& spec, const fs::path& run_dir) {
  const fs::path p = spec == "auto" ? run_dir / "checkpoints" / "last" : fs::path(spec);
  if (fs::exists(p / "state.json")) return fs::canonical(p);
  if (fs::exists(p / "checkpoints" / "last" / "state.json"))
    return fs::canonical(p / "checkpoints" / "last");
  throw CheckpointError(fmt::format(
      "{}: no checkpoint to resume from (expected a checkpoint folder with state.json, or a run "
      "folder with checkpoints/last){}",
      p.string(), spec == "auto" ? "; train without --resume to start the run" : ""));
}

// ---- Checkpointer ------------------------------------------------------------------------------

Checkpointer::Checkpointer(config::CheckpointSection cfg, fs::path dir, std::string config_yaml,
                           std::string default_monitor, bool higher_is_better)
    : cfg_(std::move(cfg)),
      dir_(std::move(dir)),
      config_yaml_(std::move(config_yaml)),
      monitor_(cfg_.monitor.empty() ? std::move(default_monitor) : cfg_.monitor),
      maximize_(cfg_.mode.empty() ? higher_is_better : cfg_.mode == "max"),
      best_value_(maximize_ ? -std::numeric_limits<double>::infinity()
                            : std::numeric_limits<double>::infinity()) {}

Checkpointer::~Checkpointer() {
  if (worker_.joinable()) worker_.join();
}

void Checkpointer::wait() {
  if (worker_.joinable()) worker_.join();
  if (worker_error_) std::rethrow_exception(std::exchange(worker_error_, nullptr));
}

fs::path Checkpointer::save(train::Trainer& t) {
  wait();
  const int64_t step = t.global_step();
  const std::string name = step_folder(step);
  // Best is decided now, from the last validation, so the snapshot carries it in its state.
  bool is_best = false;
  if (cfg_.save_best && std::isfinite(last_monitored_) &&
      (maximize_ ? last_monitored_ > best_value_ : last_monitored_ < best_value_)) {
    best_value_ = last_monitored_;
    best_name_ = name;
    is_best = true;
  }
  Snapshot snap = take_snapshot(t, config_yaml_, "{}");
  // The checkpointer's own state must reflect this save, so patch it into the snapshot.
  json state = json::parse(snap.state_json);
  state["callbacks"][this->name()] = json::parse(state_json());
  snap.state_json = state.dump(2) + "\n";
  last_saved_step_ = step;

  auto write = [this, snap = std::move(snap), name, is_best] {
    write_snapshot(snap, dir_ / name);
    set_link(dir_, "last", name);
    if (is_best) set_link(dir_, "best", name);
    retain();
  };
  if (cfg_.async) {
    worker_ = std::thread([this, write = std::move(write)]() mutable {
      try {
        write();
      } catch (...) {
        worker_error_ = std::current_exception();
      }
    });
  } else {
    write();
  }
  return dir_ / name;
}

void Checkpointer::retain() {
  std::vector<std::string> steps;
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && !e.is_symlink() && n.rfind("step-", 0) == 0) steps.push_back(n);
  }
  std::sort(steps.begin(), steps.end());
  const auto keep_from = steps.size() > static_cast<size_t>(cfg_.keep_last)
                             ? steps.size() - static_cast<size_t>(cfg_.keep_last)
                             : 0;
  for (size_t i = 0; i < keep_from; ++i) {
    if (steps[i] == best_name_) continue;
    // Rename first (atomic), then delete: a crash mid-delete leaves a hidden leftover, never a
    // step folder with half its files.
    const fs::path doomed = dir_ / fmt::format(".del-{}-{}", steps[i], ::getpid());
    std::error_code ec;
    fs::rename(dir_ / steps[i], doomed, ec);
    if (!ec) fs::remove_all(doomed, ec);
  }
  // Leftovers of earlier crashes (temporary or half-deleted folders) go too.
  for (const auto& e : fs::directory_iterator(dir_)) {
    const std::string n = e.path().filename().string();
    const bool ours = n.find(fmt::format("-{}", ::getpid())) != std::string::npos;
    if (!ours && (n.rfind(".tmp-", 0) == 0 || n.rfind(".del-", 0) == 0)) {
      std::error_code ec;
      fs::remove_all(e.path(), ec);
    }
  }
}

void Checkpointer::on_train_step_end(train::Trainer& t, int64_t, int64_t) {
  if (cfg_.every_n_steps > 0 && t.global_step() % cfg_.every_n_steps == 0) save(t);
}

void Checkpointer::on_validation_end(train::Trainer&, const train::Metrics& val) {
  const auto it = val.find(monitor_);
  if (it != val.end()) last_monitored_ = it->second;
}

void Checkpointer::on_train_epoch_end(train::Trainer& t, int64_t epoch) {
  // Only whole epochs count (an epoch cut short by max_steps or a stop is saved at fit end).
  if (cfg_.every_n_epochs > 0 && t.progress().batch_in_epoch == 0 &&
      epoch % cfg_.every_n_epochs == 0 && last_saved_step_ != t.global_step())
    save(t);
}

void Checkpointer::on_fit_end(train::Trainer& t) {
  if (last_saved_step_ != t.global_step()) save(t);
  wait();
}

std::string Checkpointer::state_json() const {
  return json{{"best_value", std::isfinite(best_value_) ? json(best_value_) : json(nullptr)},
              {"best_name", best_name_},
              {"monitor", monitor_}}
      .dump();
}

void Checkpointer::load_state_json(const std::string& text) {
  const json j = json::parse(text);
  if (!j.at("best_value").is_null()) best_value_ = j.at("best_value").get<double>();
  best_name_ = j.at("best_name").get<std::string>();
}

// ---- fine-tuning -------------------------------------------------------------------------------

std::string apply_pretrained(torch::nn::Module& module, const config::ModelSection& cfg) {
  std::string summary;
  if (!cfg.pretrained.empty()) {
    NamedTensors tensors = load_state_dict_file(cfg.pretrained);
    for (auto& [name, t] : tensors) {
      for (const auto& rule : cfg.remap) {
        const auto eq = rule.find('=');
        const std::string from = rule.substr(0, eq), to = rule.substr(eq + 1);
        if (name.rfind(from, 0) == 0) {
          name = to + name.substr(from.size());
          break;
        }
      }
    }
    const auto report = load_state_dict(module, tensors, cfg.pretrained_strict, cfg.pretrained);
    summary = report.summary();
    log::info("pretrained {}: {}", cfg.pretrained, summary);
  }
  int64_t frozen = 0;
  for (auto& item : module.named_parameters()) {
    for (const auto& pattern : cfg.freeze) {
      if (config::matches_pattern(item.key(), pattern)) {
        item.value().set_requires_grad(false);
        ++frozen;
        break;
      }
    }
  }
  LATHE_CHECK(cfg.freeze.empty() || frozen > 0, ConfigError,
              "model.freeze: no parameter name matches {}; names look like '{}'",
              fmt::join(cfg.freeze, ", "),
              module.named_parameters().is_empty() ? "" : module.named_parameters()[0].key());
  if (frozen > 0) log::info("froze {} parameter tensors matching {}", frozen, fmt::join(cfg.freeze, ", "));
  return summary;
}

}  // namespace lathe::ckpt
