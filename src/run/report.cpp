// lathe report: the run's files → one HTML page with inline SVG plots (line charts, a confusion
// heat map, a residual scatter); and test_predictions.json, written at the end of training.
#include "lathe/run/report.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <set>

#include <ATen/ATen.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>
#include <torch/nn/module.h>
#include <torch/utils.h>

#include "lathe/core/autocast.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"
#include "lathe/run/runs.h"
#include "src/run/run_files.h"

namespace lathe::run {
namespace fs = std::filesystem;
using nlohmann::json;

std::string html_escape(const std::string& text) {
  std::string out;
  out.reserve(text.size());
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&#39;"; break;
      default: out += c;
    }
  }
  return out;
}

// ---- test predictions ----------------------------------------------------------------------

void write_test_predictions(torch::nn::AnyModule& model, const train::Task& task,
                            data::BatchSource& test, c10::Device device,
                            const std::string& precision, const std::vector<std::string>& classes,
                            const fs::path& file, int64_t max_records) {
  const std::string kind = task.config().kind;
  if (kind != "classification" && kind != "regression") return;
  auto& module = *model.ptr();
  const bool was_training = module.is_training();
  module.eval();
  torch::NoGradGuard no_grad;
  const bool amp = precision == "bf16" || precision == "fp16";
  const auto dtype = precision == "fp16" ? at::kHalf : at::kBFloat16;
  std::vector<at::Tensor> truths, outs;  // per batch, on the CPU
  int64_t kept = 0;
  test.set_epoch(0);
  for (int64_t i = 0; i < test.num_batches(); ++i) {
    if (kind == "regression" && kept >= max_records) break;
    const data::Batch batch = test.batch(i);
    at::Tensor out;
    {
      AutocastGuard guard(device.type(), dtype, amp);
      out = model.forward<at::Tensor>(batch.inputs.to(device));
    }
    const int64_t b = out.size(0);
    outs.push_back(out.to(at::kFloat).reshape({b, -1}).cpu());  // (B, K)
    truths.push_back(batch.targets.cpu().reshape({b, -1}));      // (B, D)
    kept += b;
  }
  module.train(was_training);
  write_test_predictions(outs.empty() ? at::empty({0, 1}) : at::cat(outs),
                         truths.empty() ? at::empty({0}) : at::cat(truths), kind, classes, file,
                         max_records);
}

void write_test_predictions(const at::Tensor& outputs, const at::Tensor& targets,
                            const std::string& kind, const std::vector<std::string>& classes,
                            const fs::path& file, int64_t max_records) {
  if (kind != "classification" && kind != "regression") return;
  const int64_t n = outputs.size(0);
  const at::Tensor out = outputs.cpu().reshape({n, -1});  // (N, K)
  json j;
  j["task"] = kind;
  const auto flat = [](at::Tensor all, int64_t limit) {
    if (limit > 0 && all.size(0) > limit) all = all.slice(0, 0, limit);
    return all.contiguous().reshape({-1});
  };
  if (kind == "classification") {
    const at::Tensor t = flat(targets.cpu().to(at::kLong).reshape({n}), 0);
    const at::Tensor p = flat(out.argmax(-1).to(at::kLong), 0);
    j["classes"] = classes;
    j["num_classes"] = classes.empty() ? int64_t{0} : static_cast<int64_t>(classes.size());
    j["y_true"] = std::vector<int64_t>(t.data_ptr<int64_t>(), t.data_ptr<int64_t>() + t.numel());
    j["y_pred"] = std::vector<int64_t>(p.data_ptr<int64_t>(), p.data_ptr<int64_t>() + p.numel());
  } else {
    const at::Tensor t = flat(targets.cpu().to(at::kDouble).reshape({n, -1}), max_records);
    const at::Tensor p = flat(out.to(at::kDouble), max_records);
    j["outputs"] = out.size(1);
    j["y_true"] = std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
    j["y_pred"] = std::vector<double>(p.data_ptr<double>(), p.data_ptr<double>() + p.numel());
  }
  write_file_atomic(file, j.dump() + "\n");
}

ClassReport class_report(const std::vector<int64_t>& y_true, const std::vector<int64_t>& y_pred,
                         int64_t num_classes) {
  ClassReport r;
  int64_t k = num_classes;
  for (size_t i = 0; i < y_true.size(); ++i) k = std::max({k, y_true[i] + 1, y_pred[i] + 1});
  const auto K = static_cast<size_t>(k);
  r.confusion.assign(K, std::vector<int64_t>(K, 0));
  int64_t correct = 0;
  for (size_t i = 0; i < y_true.size() && i < y_pred.size(); ++i) {
    if (y_true[i] < 0 || y_pred[i] < 0) continue;
    ++r.confusion[static_cast<size_t>(y_true[i])][static_cast<size_t>(y_pred[i])];
    correct += y_true[i] == y_pred[i];
  }
  r.accuracy = y_true.empty() ? 0.0 : static_cast<double>(correct) / static_cast<double>(y_true.size());
  // sklearn averages "macro" over the labels present in y_true or y_pred.
  int64_t present = 0;
  for (size_t c = 0; c < K; ++c) {
    int64_t row = 0, col = 0;
    for (size_t o = 0; o < K; ++o) {
      row += r.confusion[c][o];
      col += r.confusion[o][c];
    }
    const double tp = static_cast<double>(r.confusion[c][c]);
    const double p = col > 0 ? tp / static_cast<double>(col) : 0.0;
    const double rec = row > 0 ? tp / static_cast<double>(row) : 0.0;
    r.precision.push_back(p);
    r.recall.push_back(rec);
    r.f1.push_back(p + rec > 0 ? 2 * p * rec / (p + rec) : 0.0);
    r.support.push_back(row);
    if (row > 0 || col > 0) {
      ++present;
      r.macro_precision += p;
      r.macro_recall += rec;
      r.macro_f1 += r.f1.back();
    }
  }
  if (present > 0) {
    r.macro_precision /= static_cast<double>(present);
    r.macro_recall /= static_cast<double>(present);
    r.macro_f1 /= static_cast<double>(present);
  }
  return r;
}

// ---- SVG plots -----------------------------------------------------------------------------
namespace {

constexpr const char* kColours[] = {"#1f77b4", "#d62728", "#2ca02c", "#ff7f0e",
                                    "#9467bd", "#8c564b", "#e377c2", "#17becf"};

struct Series {
  std::string name;
  std::vector<std::pair<double, double>> points;  ///< (x, y), finite
};

/// Round tick positions covering [lo, hi] (about `count` of them).
std::vector<double> ticks(double lo, double hi, int count = 5) {
  if (!(hi > lo)) return {lo};
  const double raw = (hi - lo) / count;
  const double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (const double m : {1.0, 2.0, 2.5, 5.0, 10.0})
    if (raw <= m * mag) {
      step = m * mag;
      break;
    }
  std::vector<double> out;
  for (double t = std::ceil(lo / step) * step; t <= hi + step * 1e-9; t += step)
    out.push_back(std::abs(t) < step * 1e-9 ? 0.0 : t);
  return out;
}

std::string tick_label(double v) { return fmt::format("{:.4g}", v); }

struct Frame {
  double x0, x1, y0, y1;  // data range
  double left = 58, right = 12, top = 30, bottom = 40, width = 460, height = 280;
  double px(double x) const { return left + (x - x0) / (x1 - x0) * (width - left - right); }
  double py(double y) const { return height - bottom - (y - y0) / (y1 - y0) * (height - top - bottom); }
};

/// Axes, grid, tick labels and titles of a chart; opens the <svg>.
std::string axes(const Frame& f, const std::string& title, const std::string& x_label,
                 const std::string& y_label) {
  std::string s = fmt::format(
      R"~(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {0} {1}" width="{0}" height="{1}" role="img">)~"
      R"~(<title>{2}</title><rect width="100%" height="100%" fill="#fff"/>)~"
      R"~(<text x="{3}" y="18" font-size="14" font-weight="bold">{2}</text>)~",
      f.width, f.height, html_escape(title), f.left);
  for (const double t : ticks(f.y0, f.y1))
    s += fmt::format(
        R"~(<line x1="{0}" x2="{1}" y1="{2:.1f}" y2="{2:.1f}" stroke="#e5e5e5"/>)~"
        R"~(<text x="{3}" y="{4:.1f}" font-size="10" text-anchor="end">{5}</text>)~",
        f.left, f.width - f.right, f.py(t), f.left - 4, f.py(t) + 3, tick_label(t));
  for (const double t : ticks(f.x0, f.x1))
    s += fmt::format(
        R"~(<line x1="{0:.1f}" x2="{0:.1f}" y1="{1}" y2="{2}" stroke="#e5e5e5"/>)~"
        R"~(<text x="{0:.1f}" y="{3}" font-size="10" text-anchor="middle">{4}</text>)~",
        f.px(t), f.top, f.height - f.bottom, f.height - f.bottom + 14, tick_label(t));
  s += fmt::format(
      R"~(<rect x="{0}" y="{1}" width="{2}" height="{3}" fill="none" stroke="#888"/>)~"
      R"~(<text x="{4}" y="{5}" font-size="11" text-anchor="middle">{6}</text>)~"
      R"~(<text x="12" y="{7}" font-size="11" text-anchor="middle" transform="rotate(-90 12 {7})">{8}</text>)~",
      f.left, f.top, f.width - f.left - f.right, f.height - f.top - f.bottom,
      (f.left + f.width - f.right) / 2, f.height - 6, html_escape(x_label),
      (f.top + f.height - f.bottom) / 2, html_escape(y_label));
  return s;
}

Frame frame_for(const std::vector<Series>& series, bool zero_based_y = false) {
  double x0 = INFINITY, x1 = -INFINITY, y0 = INFINITY, y1 = -INFINITY;
  for (const auto& s : series)
    for (const auto& [x, y] : s.points) {
      x0 = std::min(x0, x), x1 = std::max(x1, x), y0 = std::min(y0, y), y1 = std::max(y1, y);
    }
  if (zero_based_y) y0 = std::min(y0, 0.0);
  if (!(x1 > x0)) x0 -= 1, x1 += 1;
  if (!(y1 > y0)) {
    const double pad = std::abs(y0) > 0 ? std::abs(y0) * 0.1 : 1.0;
    y0 -= pad, y1 += pad;
  }
  const double pad = (y1 - y0) * 0.05;
  return Frame{x0, x1, y0 - pad, y1 + pad};
}

/// A line chart of `series` (points drawn as well when a series has few of them).
std::string line_chart(const std::string& title, const std::string& x_label,
                       const std::string& y_label, const std::vector<Series>& series) {
  const Frame f = frame_for(series);
  std::string s = axes(f, title, x_label, y_label);
  size_t c = 0;
  double legend_y = f.top + 14;
  s += fmt::format(
      R"~(<rect x="{:.1f}" y="{:.1f}" width="146" height="{}" fill="#fff" fill-opacity="0.85" stroke="#ddd"/>)~",
      f.width - f.right - 154, f.top + 3, 14 * series.size() + 4);
  for (const auto& se : series) {
    const char* colour = kColours[c++ % std::size(kColours)];
    std::string pts;
    for (const auto& [x, y] : se.points) pts += fmt::format("{:.1f},{:.1f} ", f.px(x), f.py(y));
    s += fmt::format(R"~(<polyline fill="none" stroke="{}" stroke-width="1.6" points="{}"/>)~",
                     colour, pts);
    if (se.points.size() <= 60)
      for (const auto& [x, y] : se.points)
        s += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="2.5" fill="{}"/>)~", f.px(x),
                         f.py(y), colour);
    s += fmt::format(
        R"~(<line x1="{0}" x2="{1}" y1="{2}" y2="{2}" stroke="{3}" stroke-width="2"/>)~"
        R"~(<text x="{4}" y="{5}" font-size="11">{6}</text>)~",
        f.width - f.right - 150, f.width - f.right - 132, legend_y - 4, colour,
        f.width - f.right - 128, legend_y, html_escape(se.name));
    legend_y += 14;
  }
  return s + "</svg>";
}

/// Residuals (true − predicted) against the predicted value, with the zero line.
std::string residual_chart(const std::vector<double>& y_true, const std::vector<double>& y_pred) {
  Series pts{"residual", {}};
  for (size_t i = 0; i < y_true.size() && i < y_pred.size(); ++i)
    if (std::isfinite(y_true[i]) && std::isfinite(y_pred[i]))
      pts.points.emplace_back(y_pred[i], y_true[i] - y_pred[i]);
  Frame f = frame_for({pts});
  f.y0 = std::min(f.y0, 0.0), f.y1 = std::max(f.y1, 0.0);
  std::string s = axes(f, "Residuals on the test split", "predicted", "true - predicted");
  s += fmt::format(R"~(<line x1="{}" x2="{}" y1="{:.1f}" y2="{:.1f}" stroke="#d62728"/>)~", f.left,
                   f.width - f.right, f.py(0), f.py(0));
  for (const auto& [x, y] : pts.points)
    s += fmt::format(R"~(<circle cx="{:.1f}" cy="{:.1f}" r="2.2" fill="#1f77b4" fill-opacity="0.6"/>)~",
                     f.px(x), f.py(y));
  return s + "</svg>";
}

/// The confusion matrix as a heat map: rows true classes, columns predicted (counts in cells
/// when there is room).
std::string confusion_chart(const std::vector<std::vector<int64_t>>& m,
                            const std::vector<std::string>& names) {
  const size_t k = m.size();
  const double cell = std::clamp(440.0 / static_cast<double>(std::max<size_t>(k, 1)), 6.0, 56.0);
  const double left = 110, top = 40;
  const double w = std::max(480.0, left + cell * static_cast<double>(k) + 20);
  const double h = top + cell * static_cast<double>(k) + 70;
  int64_t peak = 1;
  for (const auto& row : m)
    for (const int64_t v : row) peak = std::max(peak, v);
  std::string s = fmt::format(
      R"~(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {0} {1}" width="{0}" height="{1}" role="img">)~"
      R"~(<title>Confusion matrix</title><rect width="100%" height="100%" fill="#fff"/>)~"
      R"~(<text x="{2}" y="18" font-size="14" font-weight="bold">Confusion matrix (rows: true, columns: predicted)</text>)~",
      w, h, 10);
  const auto name = [&](size_t i) { return i < names.size() ? names[i] : std::to_string(i); };
  for (size_t r = 0; r < k; ++r) {
    const double y = top + cell * static_cast<double>(r);
    if (cell >= 10)
      s += fmt::format(R"~(<text x="{}" y="{:.1f}" font-size="10" text-anchor="end">{}</text>)~",
                       left - 4, y + cell / 2 + 3, html_escape(name(r)));
    for (size_t c = 0; c < k; ++c) {
      const double x = left + cell * static_cast<double>(c);
      const double a = static_cast<double>(m[r][c]) / static_cast<double>(peak);
      s += fmt::format(R"~(<rect x="{:.1f}" y="{:.1f}" width="{:.1f}" height="{:.1f}" fill="rgb({},{},{})"><title>true {} / predicted {}: {}</title></rect>)~",
                       x, y, cell, cell, static_cast<int>(255 - 224 * a), static_cast<int>(255 - 136 * a),
                       static_cast<int>(255 - 75 * a), html_escape(name(r)), html_escape(name(c)), m[r][c]);
      if (cell >= 24)
        s += fmt::format(R"~(<text x="{:.1f}" y="{:.1f}" font-size="10" text-anchor="middle" fill="{}">{}</text>)~",
                         x + cell / 2, y + cell / 2 + 3, a > 0.5 ? "#fff" : "#000", m[r][c]);
    }
  }
  if (cell >= 10)
    for (size_t c = 0; c < k; ++c) {
      const double x = left + cell * static_cast<double>(c) + cell / 2;
      const double y = top + cell * static_cast<double>(k) + 6;
      s += fmt::format(R"~(<text x="{0:.1f}" y="{1:.1f}" font-size="10" text-anchor="end" transform="rotate(-60 {0:.1f} {1:.1f})">{2}</text>)~",
                       x, y, html_escape(name(c)));
    }
  return s + "</svg>";
}

/// Horizontal bars of the `bars` (name, value ≥ 0) in the order given.
std::string importance_chart(const std::vector<std::pair<std::string, double>>& bars) {
  const double left = 190, right = 60, top = 30, row = 16;
  const double width = 460, height = top + row * static_cast<double>(bars.size()) + 12;
  double peak = 0;
  for (const auto& b : bars) peak = std::max(peak, b.second);
  std::string s = fmt::format(
      R"~(<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {0} {1}" width="{0}" height="{1}" role="img">)~"
      R"~(<title>Feature importance</title><rect width="100%" height="100%" fill="#fff"/>)~"
      R"~(<text x="8" y="18" font-size="14" font-weight="bold">Feature importance (total gain)</text>)~",
      width, height);
  for (size_t i = 0; i < bars.size(); ++i) {
    const double y = top + row * static_cast<double>(i);
    const double w = peak > 0 ? bars[i].second / peak * (width - left - right) : 0.0;
    s += fmt::format(
        R"~(<text x="{0}" y="{1:.1f}" font-size="10" text-anchor="end">{2}</text>)~"
        R"~(<rect x="{3}" y="{4:.1f}" width="{5:.1f}" height="{6:.1f}" fill="{7}"><title>{2}: {8}</title></rect>)~"
        R"~(<text x="{9:.1f}" y="{1:.1f}" font-size="10">{8}</text>)~",
        left - 4, y + row / 2 + 3, html_escape(bars[i].first), left, y + 2, w, row - 4,
        kColours[0], tick_label(bars[i].second), left + w + 4);
  }
  return s + "</svg>";
}

// ---- the page ----------------------------------------------------------------------------

/// Everything the page shows, read from the run folder.
struct ReportData {
  RunSummary summary;
  std::string config_yaml;
  std::vector<train::LogEvent> rows;
  json predictions;  // null without test_predictions.json
  std::vector<std::string> classes;
  /// feature_importance.json (tree models): (feature, total gain), largest first, at most 20
  std::vector<std::pair<std::string, double>> importance;
};

/// Series `key` over the rows of `kind`, x = step or epoch.
Series series_of(const std::vector<train::LogEvent>& rows, const std::string& kind,
                 const std::string& key, bool by_epoch, const std::string& label = "") {
  Series s{label.empty() ? key : label, {}};
  for (const auto& e : rows) {
    if (e.kind != kind) continue;
    const auto it = e.values.find(key);
    if (it != e.values.end() && std::isfinite(it->second))
      s.points.emplace_back(static_cast<double>(by_epoch ? e.epoch : e.step), it->second);
  }
  return s;
}

std::vector<Series> non_empty(std::vector<Series> v) {
  std::erase_if(v, [](const Series& s) { return s.points.empty(); });
  return v;
}

/// The plots of a run in page order: (id, figure caption, svg).
std::vector<std::array<std::string, 3>> plots(const ReportData& d) {
  std::vector<std::array<std::string, 3>> out;
  const auto& rows = d.rows;
  const auto add = [&](const std::string& id, const std::string& caption, std::string svg) {
    out.push_back({id, caption, std::move(svg)});
  };
  if (auto s = non_empty({series_of(rows, "step", "train/loss", false),
                          series_of(rows, "val", "val/loss", false)});
      !s.empty())
    add("plot-loss-step", "Loss per logged step (train: mean since the last row)",
        line_chart("Loss by step", "step", "loss", s));
  if (auto s = non_empty({series_of(rows, "epoch", "train_epoch/loss", true, "train"),
                          series_of(rows, "epoch", "val/loss", true, "val")});
      !s.empty())
    add("plot-loss-epoch", "Loss per epoch", line_chart("Loss by epoch", "epoch", "loss", s));
  // Every other metric validation reports, per epoch (train where the epoch meter has it).
  std::set<std::string> metrics;
  size_t val_rows = 0, epoch_rows = 0;
  for (const auto& e : rows) {
    val_rows += e.kind == "val";
    epoch_rows += e.kind == "epoch";
    if (e.kind == "val")
      for (const auto& [k, v] : e.values)
        if (k.rfind("val/", 0) == 0 && k != "val/loss") metrics.insert(k.substr(4));
  }
  for (const auto& m : metrics) {
    if (auto s = non_empty({series_of(rows, "epoch", "train_epoch/" + m, true, "train"),
                            series_of(rows, "epoch", "val/" + m, true, "val")});
        !s.empty())
      add("plot-" + m + "-epoch", m + " per epoch", line_chart(m + " by epoch", "epoch", m, s));
    if (val_rows > epoch_rows)  // validation every N steps: its curve by step too
      if (auto s = non_empty({series_of(rows, "val", "val/" + m, false, "val")}); !s.empty())
        add("plot-" + m + "-step", m + " per validation step",
            line_chart(m + " by step", "step", m, s));
  }
  // Learning rate and momentum per parameter group (the LR monitor's rows), else the step rows.
  std::vector<Series> lr, momentum;
  std::set<std::string> group_keys;
  for (const auto& e : rows)
    if (e.kind == "lr")
      for (const auto& [k, v] : e.values) group_keys.insert(k);
  for (const auto& k : group_keys) {
    if (k.rfind("lr/", 0) == 0) lr.push_back(series_of(rows, "lr", k, false));
    if (k.rfind("momentum/", 0) == 0) momentum.push_back(series_of(rows, "lr", k, false));
  }
  if (lr.empty()) lr.push_back(series_of(rows, "step", "lr", false));
  if (auto s = non_empty(lr); !s.empty())
    add("plot-lr", "Learning rate per parameter group",
        line_chart("Learning rate", "step", "lr", s));
  if (auto s = non_empty(momentum); !s.empty())
    add("plot-momentum", "Momentum (SGD, RMSprop) or beta1 (Adam, AdamW) per parameter group",
        line_chart("Momentum", "step", "momentum", s));
  // Test predictions.
  const json& p = d.predictions;
  if (p.is_object() && p.value("task", "") == "classification") {
    const auto yt = p.at("y_true").get<std::vector<int64_t>>();
    const auto yp = p.at("y_pred").get<std::vector<int64_t>>();
    const ClassReport r = class_report(yt, yp, static_cast<int64_t>(d.classes.size()));
    add("plot-confusion", fmt::format("Confusion matrix of the {} test records", yt.size()),
        confusion_chart(r.confusion, d.classes));
  } else if (p.is_object() && p.value("task", "") == "regression") {
    add("plot-residuals",
        fmt::format("Residuals of {} test values", p.at("y_true").size()),
        residual_chart(p.at("y_true").get<std::vector<double>>(),
                       p.at("y_pred").get<std::vector<double>>()));
  }
  if (!d.importance.empty())
    add("plot-feature-importance",
        fmt::format("The {} features the trees gain most from (feature_importance.json)",
                    d.importance.size()),
        importance_chart(d.importance));
  return out;
}

ReportData read_report_data(const fs::path& run_dir) {
  ReportData d;
  d.summary = summarize_run(run_dir);
  LATHE_CHECK(d.summary.status != "unreadable", DataError, "{}: cannot make a report: {}",
              run_dir.string(), d.summary.detail);
  d.config_yaml = detail::read_text(run_dir / "config.yaml");
  if (fs::exists(run_dir / "metrics.jsonl")) d.rows = read_metrics_log(run_dir / "metrics.jsonl");
  if (fs::exists(run_dir / "test_predictions.json")) {
    d.predictions = json::parse(detail::read_text(run_dir / "test_predictions.json"), nullptr, false);
    LATHE_CHECK(!d.predictions.is_discarded(), DataError,
                "{}: not valid JSON; remove it (the report then has no confusion matrix or "
                "residuals)",
                (run_dir / "test_predictions.json").string());
    if (d.predictions.contains("classes") && d.predictions["classes"].is_array())
      d.classes = d.predictions["classes"].get<std::vector<std::string>>();
  }
  if (fs::exists(run_dir / "feature_importance.json")) {
    const auto file = run_dir / "feature_importance.json";
    const json j = json::parse(detail::read_text(file), nullptr, false);
    LATHE_CHECK(j.is_object() && j.contains("features") && j["features"].is_array(), DataError,
                "{}: not a feature-importance file (an object with a 'features' list); remove it "
                "(the report then has no importance plot)",
                file.string());
    for (const auto& f : j["features"]) {
      LATHE_CHECK(f.is_object() && f.contains("name") && f["name"].is_string() &&
                      f.contains("importance") && f["importance"].is_number(),
                  DataError, "{}: every feature needs a 'name' and a numeric 'importance'",
                  file.string());
      d.importance.emplace_back(f["name"].get<std::string>(), f["importance"].get<double>());
    }
    std::stable_sort(d.importance.begin(), d.importance.end(),
                     [](const auto& a, const auto& b) { return a.second > b.second; });
    if (d.importance.size() > 20) d.importance.resize(20);
  }
  return d;
}

std::string table(const std::vector<std::string>& head,
                  const std::vector<std::vector<std::string>>& rows, const std::string& id = "") {
  std::string s = id.empty() ? "<table>" : fmt::format(R"~(<table id="{}">)~", id);
  if (std::any_of(head.begin(), head.end(), [](const std::string& h) { return !h.empty(); })) {
    s += "<tr>";
    for (const auto& h : head) s += "<th>" + html_escape(h) + "</th>";
    s += "</tr>";
  }
  for (const auto& r : rows) {
    s += "<tr>";
    for (const auto& c : r) s += "<td>" + html_escape(c) + "</td>";
    s += "</tr>";
  }
  return s + "</table>";
}

std::string fixed(double v) { return std::isfinite(v) ? fmt::format("{:.4f}", v) : "-"; }

}  // namespace

std::vector<std::string> report_plot_ids(const fs::path& run_dir) {
  std::vector<std::string> ids;
  for (const auto& p : plots(read_report_data(run_dir))) ids.push_back(p[0]);
  return ids;
}

std::string render_report(const fs::path& run_dir) {
  const ReportData d = read_report_data(run_dir);
  const RunSummary& s = d.summary;
  const auto figures = plots(d);
  std::string body;
  // Summary.
  body += fmt::format("<h1>Run {}</h1>", html_escape(s.name));
  std::vector<std::vector<std::string>> facts = {
      {"folder", s.dir.string()},
      {"status", s.status_text()},
      {"model", s.model},
      {"data", s.config.count("data.path") ? s.config.at("data.source") + ": " + s.config.at("data.path") : s.data},
      {"task", s.task},
      {"epochs", fmt::format("{} of {}", s.epochs, s.max_epochs)},
      {"optimizer steps", std::to_string(s.steps)},
      {"wall time", s.wall_s ? fmt::format("{:.1f} s", *s.wall_s) : "-"},
      {"best " + s.monitor, s.best ? fixed(*s.best) : "-"}};
  body += "<section id=\"summary\"><h2>Summary</h2>" + table({"", ""}, facts) + "</section>";
  // Test metrics.
  body += "<section id=\"test-metrics\"><h2>Test metrics</h2>";
  if (s.test.empty()) {
    body += "<p>No test metrics (the run has no test split, or it did not finish).</p>";
  } else {
    std::vector<std::vector<std::string>> rows;
    for (const auto& [k, v] : s.test) rows.push_back({k, fmt::format("{:.6g}", v)});
    body += table({"metric", "value"}, rows);
  }
  body += "</section>";
  // Plots.
  body += "<section id=\"plots\"><h2>Curves</h2><div class=\"grid\">";
  for (const auto& [id, caption, svg] : figures)
    if (id != "plot-confusion" && id != "plot-residuals")
      body += fmt::format(R"~(<figure id="{}">{}<figcaption>{}</figcaption></figure>)~", id, svg,
                          html_escape(caption));
  body += "</div></section>";
  // Test predictions: confusion matrix and per-class scores, or residuals.
  for (const auto& [id, caption, svg] : figures) {
    if (id == "plot-confusion") {
      const auto yt = d.predictions.at("y_true").get<std::vector<int64_t>>();
      const auto yp = d.predictions.at("y_pred").get<std::vector<int64_t>>();
      const ClassReport r = class_report(yt, yp, static_cast<int64_t>(d.classes.size()));
      std::vector<std::vector<std::string>> rows;
      for (size_t c = 0; c < r.f1.size(); ++c)
        rows.push_back({c < d.classes.size() ? d.classes[c] : std::to_string(c),
                        fixed(r.precision[c]), fixed(r.recall[c]), fixed(r.f1[c]),
                        std::to_string(r.support[c])});
      rows.push_back({"macro average", fixed(r.macro_precision), fixed(r.macro_recall),
                      fixed(r.macro_f1), std::to_string(yt.size())});
      body += fmt::format(
          R"~(<section id="classes"><h2>Test predictions by class</h2><figure id="{}">{}<figcaption>{}</figcaption></figure>{}</section>)~",
          id, svg, html_escape(caption),
          table({"class", "precision", "recall", "F1", "support"}, rows, "per-class"));
    } else if (id == "plot-residuals") {
      body += fmt::format(
          R"~(<section id="residuals"><h2>Test residuals</h2><figure id="{}">{}<figcaption>{}</figcaption></figure></section>)~",
          id, svg, html_escape(caption));
    }
  }
  // Checkpoints.
  body += "<section id=\"checkpoints\"><h2>Checkpoints</h2>";
  const fs::path ck = run_dir / "checkpoints";
  std::vector<std::vector<std::string>> ck_rows;
  if (fs::is_directory(ck)) {
    std::vector<fs::path> folders;
    for (const auto& e : fs::directory_iterator(ck))
      if (!e.is_symlink() && e.is_directory() && e.path().filename().string().rfind("step-", 0) == 0)
        folders.push_back(e.path());
    std::sort(folders.begin(), folders.end());
    const auto link = [&](const char* name) {
      std::error_code ec;
      return fs::read_symlink(ck / name, ec).filename().string();
    };
    for (const auto& f : folders) {
      const auto st = json::parse(detail::read_text(f / "state.json"), nullptr, false);
      std::vector<std::string> marks;
      if (link("last") == f.filename().string()) marks.push_back("last");
      if (link("best") == f.filename().string()) marks.push_back("best");
      ck_rows.push_back(
          {f.filename().string(),
           st.is_object() ? std::to_string(st.value("step", int64_t{-1})) : "?",
           st.is_object() ? std::to_string(st.value("epoch", int64_t{-1})) : "?",
           fmt::format("{}", fmt::join(marks, ", "))});
    }
  }
  body += ck_rows.empty() ? "<p>No checkpoints.</p>"
                          : table({"folder", "step", "epochs done", ""}, ck_rows, "checkpoint-list");
  body += "</section>";
  // Config.
  body += "<section id=\"config\"><h2>Config (resolved)</h2><pre>" + html_escape(d.config_yaml) +
          "</pre></section>";

  std::vector<std::string> ids;
  for (const auto& f : figures) ids.push_back("\"" + f[0] + "\"");
  const std::string script = fmt::format(
      "<script>(function(){{var ids=[{}];var ok=ids.every(function(id){{var e=document."
      "getElementById(id);return e!==null&&e.querySelector('svg')!==null;}});document.body."
      "setAttribute('data-plots',ok?'ok':'missing');document.body.setAttribute('data-plot-count',"
      "String(ids.length));}})();</script>",
      fmt::join(ids, ","));
  const std::string style =
      "body{font-family:sans-serif;margin:24px;color:#222;max-width:1400px}"
      "table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ccc;padding:3px 8px;"
      "text-align:left;font-size:13px}th{background:#f3f3f3}"
      ".grid{display:flex;flex-wrap:wrap;gap:12px}figure{margin:0}"
      "figcaption{font-size:12px;color:#555}pre{background:#f7f7f7;padding:8px;font-size:12px;"
      "overflow:auto}";
  return fmt::format(
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>lathe run {}"
      "</title><style>{}</style></head><body>{}{}</body></html>\n",
      html_escape(s.name), style, body, script);
}

fs::path write_report(const fs::path& run_dir, const fs::path& output) {
  const fs::path out = output.empty() ? run_dir / "report.html" : output;
  write_file_atomic(out, render_report(run_dir));
  return out;
}

}  // namespace lathe::run
