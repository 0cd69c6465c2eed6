// Finding and comparing runs (lathe runs), the HTML report (checked in headless Chromium) and
// MLflow tracking (against a real `mlflow server`, read back with MLflow's Python client).
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cmath>
#include <fstream>
#include <thread>

#include <ATen/ATen.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "lathe/config/config.h"
#include "lathe/core/error.h"
#include "lathe/data/image.h"
#include "lathe/run/export.h"
#include "lathe/run/report.h"
#include "lathe/run/run.h"
#include "lathe/run/runs.h"
#include "tests/support.h"

namespace {

namespace fs = std::filesystem;
namespace config = lathe::config;
namespace run = lathe::run;
using lathe::testing::read_text;
using lathe::testing::TempDir;
using lathe::testing::write_text;
using nlohmann::json;

/// The wine recipe (178 records, 3 classes) at a few epochs: a whole run in about a second.
config::RunConfig wine_run(const TempDir& dir, const std::string& name,
                           std::vector<std::string> extra = {}) {
  const std::string src = lathe::testing::source_dir();
  std::vector<std::string> o = {"run.dir=" + dir.path().string(), "run.name=" + name,
                                "run.threads=1", "data.path=" + src + "/datasets/wine.csv",
                                "trainer.max_epochs=3", "trainer.progress=none",
                                "trainer.tensorboard=false", "trainer.log_every_n_steps=2"};
  o.insert(o.end(), extra.begin(), extra.end());
  return config::load_config(src + "/configs/wine_mlp.yaml", o);
}

const run::RunSummary& find(const std::vector<run::RunSummary>& runs, const std::string& name) {
  for (const auto& r : runs)
    if (r.name == name) return r;
  static const run::RunSummary none;
  ADD_FAILURE() << "no run named " << name;
  return none;
}

void copy_run(const fs::path& from, const fs::path& to) {
  fs::create_directories(to.parent_path());
  fs::copy(from, to, fs::copy_options::recursive | fs::copy_options::copy_symlinks);
}

/// A run.json whose last start never ended, by a process that no longer exists.
void make_killed(const fs::path& dir) {
  auto record = json::parse(read_text(dir / "run.json"));
  auto& seg = record["segments"].back();
  for (const char* k : {"ended", "ended_unix", "seconds", "stopped_early"}) seg.erase(k);
  seg["pid"] = 999999999;  // above any pid_max: no such process
  write_text(dir / "run.json", record.dump(2));
  fs::remove(dir / "test_metrics.json");
}

std::vector<std::string> names_of(const std::vector<run::RunSummary>& runs) {
  std::vector<std::string> out;
  for (const auto& r : runs) out.push_back(r.name);
  return out;
}

}  // namespace

TEST(Runs, StatusProgressAndMetricsFromWhatEachRunFolderHolds) {
  TempDir dir;
  run::train_from_config(wine_run(dir, "a"));
  // Early stopping: no validation improves val/loss by 100, so it stops after the second.
  run::train_from_config(wine_run(dir, "b", {"trainer.max_epochs=5",
                                             "trainer.early_stopping.monitor=val/loss",
                                             "trainer.early_stopping.patience=1",
                                             "trainer.early_stopping.min_delta=100"}));
  copy_run(dir / "a", dir / "c");
  make_killed(dir / "c");
  copy_run(dir / "c", dir / "d");
  fs::remove_all(dir / "d" / "checkpoints");
  fs::create_directories(dir / "e");
  write_text(dir / "e" / "config.yaml", "model: [\n");
  copy_run(dir / "a", dir / "f");
  {  // a damaged row in the middle of metrics.jsonl
    std::string text = read_text(dir / "f" / "metrics.jsonl");
    text.insert(text.find('\n') + 1, "{\"kind\": \"step\", oops\n");
    write_text(dir / "f" / "metrics.jsonl", text);
  }
  copy_run(dir / "a", dir / "g");
  {  // a last row cut short by a crash is not damage
    std::ofstream(dir / "g" / "metrics.jsonl", std::ios::app) << "{\"kind\": \"ste";
  }
  copy_run(dir / "a", dir / "sweep" / "t1");
  fs::create_directories(dir / "junk");
  // A run whose training failed (the loss blows up): run.json keeps the error.
  EXPECT_THROW(run::train_from_config(wine_run(dir, "h", {"optim.lr=1e30", "optim.schedule.name=constant"})),
               lathe::TrainError);

  const auto runs = run::list_runs(dir.path());
  EXPECT_EQ(runs.size(), 10u) << fmt::format("{}", fmt::join(names_of(runs), " "));

  const auto& a = find(runs, "a");
  EXPECT_EQ(a.status, "finished");
  EXPECT_EQ(a.status_text(), "finished");
  EXPECT_EQ(a.model, "mlp");
  EXPECT_EQ(a.data, "csv:wine.csv");
  EXPECT_EQ(a.task, "classification");
  EXPECT_EQ(a.epochs, 3);
  EXPECT_EQ(a.max_epochs, 3);
  EXPECT_EQ(a.steps, 3 * 8);  // 124 training records in batches of 16
  EXPECT_EQ(a.monitor, "val/accuracy");
  ASSERT_TRUE(a.best.has_value());
  EXPECT_GT(*a.best, 0.0);
  EXPECT_LE(*a.best, 1.0);
  ASSERT_TRUE(a.test.count("accuracy"));
  const auto test_json = json::parse(read_text(dir / "a" / "test_metrics.json"));
  EXPECT_EQ(a.test.at("accuracy"), test_json["accuracy"].get<double>());
  ASSERT_TRUE(a.wall_s.has_value());
  EXPECT_GT(*a.wall_s, 0.0);
  EXPECT_GT(a.started_unix, 1.7e9);
  EXPECT_TRUE(a.resumable);
  EXPECT_EQ(a.resume_step, 24);
  EXPECT_EQ(a.config.at("optim.lr"), "0.01");
  EXPECT_EQ(a.config.at("model.hidden"), "[32]");

  const auto& b = find(runs, "b");
  EXPECT_EQ(b.status, "stopped early");
  EXPECT_EQ(b.epochs, 2);
  EXPECT_EQ(b.max_epochs, 5);
  EXPECT_NE(b.detail.find("early stopping: val/loss"), std::string::npos) << b.detail;

  const auto& c = find(runs, "c");
  EXPECT_EQ(c.status, "killed");
  EXPECT_EQ(c.status_text(), "killed (resumable from step 24)");
  EXPECT_TRUE(c.test.empty());
  const auto& d = find(runs, "d");
  EXPECT_EQ(d.status_text(), "killed (not resumable: no checkpoint)");
  EXPECT_FALSE(d.resumable);

  const auto& e = find(runs, "e");
  EXPECT_EQ(e.status, "unreadable");
  EXPECT_NE(e.detail.find("config.yaml:"), std::string::npos) << e.detail;
  const auto& f = find(runs, "f");
  EXPECT_EQ(f.status, "unreadable");
  EXPECT_NE(f.detail.find("metrics.jsonl:2: not a metrics row"), std::string::npos) << f.detail;
  EXPECT_EQ(f.detail.find(dir.path().string()), std::string::npos) << "the row names the folder";
  EXPECT_EQ(find(runs, "g").status, "finished");
  EXPECT_EQ(find(runs, "g").steps, 24);
  EXPECT_EQ(find(runs, "sweep/t1").status, "finished");
  const auto& h = find(runs, "h");
  EXPECT_EQ(h.status, "failed");
  EXPECT_NE(h.detail.find("loss"), std::string::npos) << h.detail;
  EXPECT_EQ(find(runs, "junk").status_text(),
            "unreadable: no config.yaml (not a run folder, or one whose run never started)");

  // The table: a header and one line per run, the unreadable ones included.
  const std::string table = run::format_runs_table(runs);
  EXPECT_EQ(std::count(table.begin(), table.end(), '\n'), 11);
  EXPECT_EQ(table.rfind("NAME", 0), 0u);
  EXPECT_NE(table.find("killed (resumable from step 24)"), std::string::npos) << table;
  EXPECT_NE(table.find("accuracy "), std::string::npos) << table;
  // JSON: every field, one object per run.
  const auto j = json::parse(run::runs_json(runs));
  ASSERT_EQ(j.size(), 10u);
  for (const auto& row : j)
    if (row["name"] == "a") {
      EXPECT_EQ(row["status"], "finished");
      EXPECT_EQ(row["steps"], 24);
      EXPECT_EQ(row["config"]["model.name"], "mlp");
      EXPECT_EQ(row["test"]["accuracy"].get<double>(), a.test.at("accuracy"));
    }
}

TEST(Runs, FilterSortDiffAndResumeRecords) {
  TempDir dir;
  run::train_from_config(wine_run(dir, "slow", {"optim.lr=0.0001"}));
  run::train_from_config(wine_run(dir, "fast", {"optim.lr=0.03", "model.hidden=[16]"}));
  fs::create_directories(dir / "broken");

  auto runs = run::list_runs(dir.path());
  ASSERT_EQ(runs.size(), 3u);
  EXPECT_EQ(runs.front().name, "broken");  // no start time: first by start time

  auto only = runs;
  run::filter_runs(only, {"optim.lr=1e-4"});  // numbers compare as numbers
  EXPECT_EQ(names_of(only), std::vector<std::string>{"slow"});
  only = runs;
  run::filter_runs(only, {"status=finished", "model.hidden=[16]"});
  EXPECT_EQ(names_of(only), std::vector<std::string>{"fast"});
  only = runs;
  run::filter_runs(only, {"status=unreadable"});
  EXPECT_EQ(names_of(only), std::vector<std::string>{"broken"});
  lathe::testing::expect_error<lathe::ConfigError>(
      [&] { run::filter_runs(only, {"optim.lrr=1"}); },
      {"--filter 'optim.lrr=1': no run has the key 'optim.lrr'; keys are name, model"});
  lathe::testing::expect_error<lathe::ConfigError>([&] { run::filter_runs(only, {"optim.lr"}); },
                                                   {"expected key=value"});

  // Metric keys sort best first; runs without the key go last either way.
  const double slow_loss = find(runs, "slow").test.at("loss");
  const double fast_loss = find(runs, "fast").test.at("loss");
  run::sort_runs(runs, "test.loss");
  EXPECT_EQ(names_of(runs), (slow_loss < fast_loss ? std::vector<std::string>{"slow", "fast", "broken"}
                                                   : std::vector<std::string>{"fast", "slow", "broken"}));
  run::sort_runs(runs, "optim.lr");
  EXPECT_EQ(names_of(runs), (std::vector<std::string>{"slow", "fast", "broken"}));
  run::sort_runs(runs, "optim.lr", /*reverse=*/true);
  EXPECT_EQ(names_of(runs), (std::vector<std::string>{"fast", "slow", "broken"}));
  lathe::testing::expect_error<lathe::ConfigError>([&] { run::sort_runs(runs, "speed"); },
                                                   {"--sort 'speed': not a key"});

  // The difference: config keys (dotted, run.name left out) and metric deltas b - a.
  const auto a = run::summarize_run(dir / "slow"), b = run::summarize_run(dir / "fast");
  const auto diff = run::diff_runs(a, b);
  std::map<std::string, std::pair<std::string, std::string>> keys;
  for (const auto& v : diff.config) keys[v.key] = {v.a, v.b};
  EXPECT_EQ(keys.size(), 2u);
  EXPECT_EQ(keys["optim.lr"], (std::pair<std::string, std::string>{"0.0001", "0.03"}));
  EXPECT_EQ(keys["model.hidden"], (std::pair<std::string, std::string>{"[32]", "[16]"}));
  bool saw_accuracy = false;
  for (const auto& m : diff.metrics)
    if (m.key == "test.accuracy") {
      saw_accuracy = true;
      EXPECT_EQ(*m.a, a.test.at("accuracy"));
      EXPECT_EQ(*m.b, b.test.at("accuracy"));
    }
  EXPECT_TRUE(saw_accuracy);
  const std::string text = run::format_diff(a, b, diff);
  EXPECT_NE(text.find("optim.lr"), std::string::npos) << text;
  EXPECT_NE(text.find("0.0001 -> 0.03"), std::string::npos) << text;
  const auto j = json::parse(run::diff_json(a, b, diff));
  EXPECT_EQ(j["config"].size(), 2u);

  // A resumed run keeps its first start and adds up the wall time of both.
  auto more = wine_run(dir, "slow", {"optim.lr=0.0001", "trainer.max_epochs=4"});
  run::train_from_config(more, "auto");
  const auto record = json::parse(read_text(dir / "slow" / "run.json"));
  ASSERT_EQ(record["segments"].size(), 2u);
  const auto resumed = run::summarize_run(dir / "slow");
  EXPECT_EQ(resumed.status, "finished");
  EXPECT_EQ(resumed.epochs, 4);
  EXPECT_EQ(resumed.started_unix, record["segments"][0]["started_unix"].get<double>());
  EXPECT_NEAR(*resumed.wall_s,
              record["segments"][0]["seconds"].get<double>() +
                  record["segments"][1]["seconds"].get<double>(),
              1e-9);
}

TEST(RunReport, ClassificationPageHasCurvesConfusionMatrixAndScikitLearnPerClassScores) {
  TempDir dir;
  run::train_from_config(wine_run(dir, "w"));
  const auto run_dir = dir / "w";
  ASSERT_TRUE(fs::exists(run_dir / "report.html"));  // written at the end of training
  const std::string page = read_text(run_dir / "report.html");
  const auto ids = run::report_plot_ids(run_dir);
  for (const char* id : {"plot-loss-step", "plot-loss-epoch", "plot-accuracy-epoch",
                         "plot-f1_macro-epoch", "plot-lr", "plot-momentum", "plot-confusion"}) {
    EXPECT_NE(std::find(ids.begin(), ids.end(), id), ids.end()) << id;
    EXPECT_NE(page.find(fmt::format("<figure id=\"{}\"><svg", id)), std::string::npos) << id;
  }
  EXPECT_NE(page.find("<table id=\"per-class\">"), std::string::npos);
  EXPECT_NE(page.find("<table id=\"checkpoint-list\">"), std::string::npos);
  EXPECT_NE(page.find("optim:"), std::string::npos);  // the config
  EXPECT_EQ(page.find("http://"), page.find("http://www.w3.org/2000/svg"));  // no fetches
  EXPECT_EQ(page.find("https://"), std::string::npos);
  EXPECT_EQ(page.find("<link"), std::string::npos);
  EXPECT_EQ(page.find("src="), std::string::npos);

  // Per-class scores from the stored predictions agree with the run's own test metrics and
  // with scikit-learn (the oracle reads the same test_predictions.json).
  const auto preds = json::parse(read_text(run_dir / "test_predictions.json"));
  const auto yt = preds["y_true"].get<std::vector<int64_t>>();
  const auto yp = preds["y_pred"].get<std::vector<int64_t>>();
  const auto test = json::parse(read_text(run_dir / "test_metrics.json"));
  EXPECT_EQ(preds["classes"].size(), 3u);
  EXPECT_EQ(yt.size(), 27u);  // 15% of 178
  const run::ClassReport r = run::class_report(yt, yp, 3);
  EXPECT_NEAR(r.accuracy, test["accuracy"].get<double>(), 1e-12);
  EXPECT_NEAR(r.macro_f1, test["f1_macro"].get<double>(), 1e-9);
  EXPECT_NEAR(r.macro_precision, test["precision_macro"].get<double>(), 1e-9);
  EXPECT_NEAR(r.macro_recall, test["recall_macro"].get<double>(), 1e-9);
  const auto oracle = json::parse(
      lathe::testing::run_parity("report_oracle.py", (run_dir / "test_predictions.json").string()));
  for (size_t c = 0; c < 3; ++c) {
    EXPECT_NEAR(r.precision[c], oracle["precision"][c].get<double>(), 1e-12) << c;
    EXPECT_NEAR(r.recall[c], oracle["recall"][c].get<double>(), 1e-12) << c;
    EXPECT_NEAR(r.f1[c], oracle["f1"][c].get<double>(), 1e-12) << c;
    EXPECT_EQ(r.support[c], oracle["support"][c].get<int64_t>()) << c;
    for (size_t o = 0; o < 3; ++o) EXPECT_EQ(r.confusion[c][o], oracle["confusion"][c][o].get<int64_t>());
  }
}

TEST(RunReport, RegressionPageHasResidualsOfTheTestPredictions) {
  TempDir dir;
  const std::string src = lathe::testing::source_dir();
  run::train_from_config(config::load_config(
      src + "/configs/diabetes_regression.yaml",
      {"run.dir=" + dir.path().string(), "run.name=d", "run.threads=1",
       "data.path=" + src + "/datasets/diabetes.csv", "trainer.max_epochs=2",
       "trainer.progress=none", "trainer.tensorboard=false"}));
  const auto ids = run::report_plot_ids(dir / "d");
  EXPECT_NE(std::find(ids.begin(), ids.end(), "plot-residuals"), ids.end());
  EXPECT_EQ(std::find(ids.begin(), ids.end(), "plot-confusion"), ids.end());
  // The predictions are the ones the test metrics were computed on: same RMSE.
  const auto preds = json::parse(read_text(dir / "d" / "test_predictions.json"));
  const auto yt = preds["y_true"].get<std::vector<double>>();
  const auto yp = preds["y_pred"].get<std::vector<double>>();
  ASSERT_EQ(yt.size(), yp.size());
  ASSERT_GT(yt.size(), 50u);
  double sq = 0;
  for (size_t i = 0; i < yt.size(); ++i) sq += (yt[i] - yp[i]) * (yt[i] - yp[i]);
  const auto test = json::parse(read_text(dir / "d" / "test_metrics.json"));
  EXPECT_NEAR(std::sqrt(sq / static_cast<double>(yt.size())), test["rmse"].get<double>(),
              1e-4 * test["rmse"].get<double>());
  const std::string page = read_text(dir / "d" / "report.html");
  EXPECT_NE(page.find("<figure id=\"plot-residuals\"><svg"), std::string::npos);
}

TEST(RunReport, TextIsEscaped) {
  EXPECT_EQ(run::html_escape("a<b>&\"c'"), "a&lt;b&gt;&amp;&quot;c&#39;");
  TempDir dir;
  const std::string name = "x<img src=x onerror=alert(1)>&y";
  run::train_from_config(wine_run(dir, name, {"trainer.max_epochs=1"}));
  const std::string page = run::render_report(dir / name);
  EXPECT_EQ(page.find("<img"), std::string::npos);
  EXPECT_NE(page.find("x&lt;img src=x onerror=alert(1)&gt;&amp;y"), std::string::npos);
}

namespace {

/// Runs headless Chromium (Debian's `chromium`) on `url` with `args`; stdout and stderr apart.
struct BrowserResult {
  int status = -1;
  std::string out, err;
};
BrowserResult chromium(const TempDir& dir, const std::string& args, const std::string& url) {
  const auto out = dir / "chromium.out", err = dir / "chromium.err";
  const auto r = lathe::testing::run_command(fmt::format(
      "(chromium --headless --disable-gpu --no-sandbox --user-data-dir={} --enable-logging=stderr "
      "--v=0 {} {} >{} 2>{})",
      (dir / "profile").string(), args, url, out.string(), err.string()));
  return {r.status, read_text(out), read_text(err)};
}

/// The console lines Chromium logged (console.* calls and uncaught exceptions).
std::vector<std::string> console_lines(const std::string& err) {
  std::vector<std::string> lines;
  std::istringstream in(err);
  for (std::string line; std::getline(in, line);)
    if (line.find(":CONSOLE") != std::string::npos || line.find("Uncaught") != std::string::npos)
      lines.push_back(line);
  return lines;
}

}  // namespace

TEST(RunReport, RendersInHeadlessChromiumWithEveryPlotAndNoConsoleErrors) {
  ASSERT_EQ(lathe::testing::run_command("command -v chromium").status, 0)
      << "chromium is not installed: scripts/bootstrap.sh installs Debian's chromium";
  TempDir dir;
  run::train_from_config(wine_run(dir, "w"));
  const std::string url = "file://" + (dir / "w" / "report.html").string();
  const auto ids = run::report_plot_ids(dir / "w");

  // The DOM after the page's script ran: it marks the body when every plot's SVG is there.
  const auto dom = chromium(dir, "--dump-dom", url);
  ASSERT_EQ(dom.status, 0) << dom.err;
  EXPECT_NE(dom.out.find("data-plots=\"ok\""), std::string::npos) << dom.out.substr(0, 400);
  EXPECT_NE(dom.out.find(fmt::format("data-plot-count=\"{}\"", ids.size())), std::string::npos);
  for (const auto& id : ids) EXPECT_NE(dom.out.find("id=\"" + id + "\""), std::string::npos) << id;
  EXPECT_TRUE(console_lines(dom.err).empty()) << fmt::format("{}", fmt::join(console_lines(dom.err), "\n"));

  // A screenshot: a real picture, not a blank page.
  const auto png = dir / "report.png";
  const auto shot = chromium(dir, "--screenshot=" + png.string() + " --window-size=1280,2400", url);
  ASSERT_EQ(shot.status, 0) << shot.err;
  ASSERT_TRUE(fs::exists(png));
  EXPECT_GT(fs::file_size(png), 20000u);
  const at::Tensor image = lathe::data::read_image(png, 3);  // (3, H, W) uint8
  EXPECT_EQ(image.size(1), 2400);
  EXPECT_EQ(image.size(2), 1280);
  EXPECT_GT(image.to(at::kFloat).std().item<double>(), 10.0);
  EXPECT_GT(std::get<0>(at::_unique(image.reshape({3, -1}).sum(0))).numel(), 20);
  EXPECT_TRUE(console_lines(shot.err).empty());

  // The check sees errors when there are some: a page that throws is caught by it.
  write_text(dir / "bad.html", "<html><body><script>undefinedFunction();</script></body></html>");
  const auto bad = chromium(dir, "--dump-dom", "file://" + (dir / "bad.html").string());
  ASSERT_EQ(console_lines(bad.err).size(), 1u) << bad.err;
  EXPECT_NE(console_lines(bad.err)[0].find("Uncaught ReferenceError"), std::string::npos);
}

namespace {

/// A free TCP port on 127.0.0.1 (bound and released; the server takes it right after).
int free_port() {
  const int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  socklen_t len = sizeof addr;
  ::bind(s, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  ::getsockname(s, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(s);
  return ntohs(addr.sin_port);
}

/// `mlflow server` (the venv's) on 127.0.0.1 with a SQLite store and served artifacts under
/// `dir`, in its own process group; the whole group is stopped when this goes out of scope.
class MlflowServer {
 public:
  explicit MlflowServer(const TempDir& dir) : port_(free_port()), log_(dir / "server.log") {
    const std::string mlflow = fs::path(lathe::testing::python()).parent_path() / "mlflow";
    const std::string cmd = fmt::format(
        "MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec {} server --host 127.0.0.1 --port {} "
        "--workers 1 --backend-store-uri sqlite:///{} --artifacts-destination {} >{} 2>&1",
        mlflow, port_, (dir / "mlflow.db").string(), (dir / "artifacts").string(), log_.string());
    pid_ = ::fork();
    if (pid_ == 0) {
      ::setpgid(0, 0);
      ::execl("/bin/sh", "sh", "-c", cmd.c_str(), static_cast<char*>(nullptr));
      ::_exit(127);
    }
    ::setpgid(pid_, pid_);
  }
  ~MlflowServer() {
    if (pid_ <= 0) return;
    ::kill(-pid_, SIGTERM);
    for (int i = 0; i < 20; ++i) {  // 2 s for a clean stop, then no more waiting
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    ::kill(-pid_, SIGKILL);  // the group: uvicorn's worker too
    ::waitpid(pid_, nullptr, WNOHANG);
  }
  MlflowServer(const MlflowServer&) = delete;
  MlflowServer& operator=(const MlflowServer&) = delete;
  std::string uri() const { return fmt::format("http://127.0.0.1:{}", port_); }
  std::string log() const { return read_text(log_); }

 private:
  int port_;
  fs::path log_;
  pid_t pid_ = -1;
};

}  // namespace

TEST(Mlflow, ParamsMetricsTagsAndArtifactsReadBackWithMlflowsClient) {
  const auto test_start = std::chrono::steady_clock::now();
  TempDir dir;
  MlflowServer server(dir);
  const auto up = lathe::testing::run_command(fmt::format(
      "{} {}/tests/parity/mlflow_oracle.py wait {} 120", lathe::testing::python(),
      lathe::testing::source_dir(), server.uri()));
  ASSERT_EQ(up.status, 0) << up.output << server.log();
  const auto started = std::chrono::steady_clock::now();

  run::train_from_config(wine_run(
      dir, "tracked",
      {"trainer.max_epochs=2", "trainer.mlflow.tracking_uri=" + server.uri(),
       "trainer.mlflow.experiment=lathe-test", "trainer.mlflow.run_name=wine-mlflow"}));
  const auto record = json::parse(read_text(dir / "tracked" / "run.json"));
  ASSERT_TRUE(record.contains("mlflow")) << record.dump();
  EXPECT_EQ(record["mlflow"]["tracking_uri"], server.uri());
  // `lathe export` of a tracked run logs model.onnx to the same MLflow run.
  run::RunExportOptions o;
  run::export_run(dir / "tracked", o);

  const std::string out = lathe::testing::run_parity(
      "mlflow_oracle.py",
      fmt::format("check {} {} lathe-test wine-mlflow config.yaml test_metrics.json "
                  "test_predictions.json report.html model.onnx",
                  server.uri(), (dir / "tracked").string()));
  const auto at = out.rfind("{\"ok\"");
  ASSERT_NE(at, std::string::npos) << out;
  const auto summary = json::parse(out.substr(at));
  EXPECT_TRUE(summary["ok"].get<bool>());
  EXPECT_GT(summary["params"].get<int>(), 80);
  EXPECT_EQ(summary["histories"]["train_epoch/loss"], 2);
  EXPECT_EQ(summary["histories"]["val/accuracy"], 2);
  std::printf("mlflow: server up in %.1f s, train + export + read back %.1f s\n",
              std::chrono::duration<double>(started - test_start).count(),
              std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

TEST(Mlflow, TrackingKeysAreValidatedLikeEveryOtherKey) {
  const std::string yaml = "data: {path: /x}\nmodel: {name: mlp}\n";
  lathe::testing::expect_error<lathe::ConfigError>(
      [&] { config::parse_config(yaml, "run.yaml", {"trainer.mlflow.tracking_uri=file:///tmp/mlruns"}); },
      {"override 'trainer.mlflow.tracking_uri=file:///tmp/mlruns': trainer.mlflow.tracking_uri = "
       "file:///tmp/mlruns: lathe talks to an MLflow tracking server over HTTP"});
  lathe::testing::expect_error<lathe::ConfigError>(
      [&] { config::parse_config(yaml, "run.yaml", {"trainer.mlflow.experimnt=x"}); },
      {"unknown key 'trainer.mlflow.experimnt'"});
  const auto cfg = config::parse_config(
      yaml, "run.yaml", {"trainer.mlflow.tracking_uri=http://127.0.0.1:5000", "trainer.mlflow.run_name=r1"});
  EXPECT_EQ(cfg.trainer.mlflow.experiment, "Default");
  // The resolved config carries the section and reads back the same.
  const auto again = config::parse_config(config::to_yaml(cfg), "resolved.yaml");
  EXPECT_EQ(again.trainer.mlflow.tracking_uri, "http://127.0.0.1:5000");
  EXPECT_EQ(again.trainer.mlflow.run_name, "r1");
}
