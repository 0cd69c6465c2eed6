// MLflow tracking over its REST API 2.0 (libcurl): experiments/get-by-name and create, runs/create,
// runs/log-batch, runs/update, and artifact upload through the mlflow-artifacts proxy.
#include "lathe/run/mlflow.h"

#include <curl/curl.h>

#include <cmath>
#include <mutex>
#include <thread>

#include <nlohmann/json.hpp>

#include "lathe/core/error.h"
#include "lathe/core/log.h"
#include "lathe/run/runs.h"
#include "src/run/run_files.h"

namespace lathe::run {
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

constexpr size_t kMaxParamValue = 6000;  // MLflow's limit on a param value (characters)
constexpr size_t kMaxKey = 250;          // and on a param or tag key
constexpr size_t kMaxTagValue = 5000;
constexpr size_t kParamsPerBatch = 100;  // runs/log-batch: at most 100 params
constexpr size_t kMetricsPerBatch = 1000;  // and 1000 metrics a request
constexpr int kAttempts = 4;             // a call and its retries
constexpr double kFlushSeconds = 30;

struct HttpResponse {
  long status = 0;
  std::string body;
  std::string error;  ///< transport failure (connection refused, timeout), empty otherwise
};

size_t append_body(char* data, size_t size, size_t count, void* out) {
  static_cast<std::string*>(out)->append(data, size * count);
  return size * count;
}

/// One HTTP request; never throws.
HttpResponse http(const std::string& method, const std::string& url, const std::string& body,
                  const std::string& content_type, long timeout_ms) {
  static std::once_flag init;
  std::call_once(init, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
  HttpResponse r;
  CURL* curl = curl_easy_init();
  if (curl == nullptr) return {0, "", "libcurl could not start a request"};
  curl_slist* headers = nullptr;
  headers = curl_slist_append(headers, ("Content-Type: " + content_type).c_str());
  char error[CURL_ERROR_SIZE] = {};
  curl_easy_setopt(curl, CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl, CURLOPT_NOSIGNAL, 1L);
  curl_easy_setopt(curl, CURLOPT_CONNECTTIMEOUT_MS, 5000L);
  curl_easy_setopt(curl, CURLOPT_TIMEOUT_MS, timeout_ms);
  curl_easy_setopt(curl, CURLOPT_ERRORBUFFER, error);
  curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
  if (method != "GET") {
    curl_easy_setopt(curl, CURLOPT_CUSTOMREQUEST, method.c_str());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body.data());
    curl_easy_setopt(curl, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  }
  const CURLcode rc = curl_easy_perform(curl);
  if (rc != CURLE_OK)
    r.error = error[0] != '\0' ? std::string(error) : std::string(curl_easy_strerror(rc));
  else
    curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &r.status);
  curl_slist_free_all(headers);
  curl_easy_cleanup(curl);
  return r;
}

/// A request with retries (exponential backoff) on transport errors, 429 and 5xx. Returns the
/// last response; `why` says what went wrong when it is not an answer the caller takes.
HttpResponse http_with_retries(const std::string& method, const std::string& url,
                               const std::string& body, const std::string& content_type,
                               long timeout_ms, const std::vector<long>& allow, std::string& why) {
  HttpResponse r;
  for (int attempt = 0; attempt < kAttempts; ++attempt) {
    if (attempt > 0)
      std::this_thread::sleep_for(std::chrono::milliseconds(250 << (attempt - 1)));
    r = http(method, url, body, content_type, timeout_ms);
    const bool allowed = std::find(allow.begin(), allow.end(), r.status) != allow.end();
    if (r.error.empty() && ((r.status >= 200 && r.status < 300) || allowed)) {
      why.clear();
      return r;
    }
    const auto j = json::parse(r.body, nullptr, false);
    const std::string server_says =
        j.is_object() && j.contains("message") ? j["message"].dump() : r.body.substr(0, 200);
    why = !r.error.empty() ? r.error
                           : fmt::format("HTTP {} {}", r.status, server_says);
    const bool transient = !r.error.empty() || r.status == 429 || r.status >= 500;
    if (!transient) break;
  }
  return r;
}

std::string url_encode(const std::string& s) {
  std::string out;
  for (const unsigned char c : s) {
    if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~')
      out += static_cast<char>(c);
    else
      out += fmt::format("%{:02X}", c);
  }
  return out;
}

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string trim_base(std::string uri) {
  while (!uri.empty() && uri.back() == '/') uri.pop_back();
  return uri;
}

/// The proxy path of an artifact root ("mlflow-artifacts:/1/abc/artifacts" or
/// "mlflow-artifacts://host:5000/1/abc/artifacts" → "1/abc/artifacts"); empty for roots the
/// server does not proxy (a local folder, s3://...).
std::string proxied_path(const std::string& artifact_uri) {
  const std::string scheme = "mlflow-artifacts:";
  if (artifact_uri.rfind(scheme, 0) != 0) return "";
  std::string rest = artifact_uri.substr(scheme.size());
  if (rest.rfind("//", 0) == 0) {  // an authority part: drop it
    const auto slash = rest.find('/', 2);
    rest = slash == std::string::npos ? "" : rest.substr(slash);
  }
  while (!rest.empty() && rest.front() == '/') rest.erase(0, 1);
  return rest;
}

/// PUT one file to the proxy; "" on success, else why not.
std::string upload(const std::string& tracking_uri, const std::string& artifact_uri,
                   const fs::path& file) {
  const std::string root = proxied_path(artifact_uri);
  if (root.empty())
    return fmt::format(
        "the server keeps artifacts at {}, which it does not serve; start it with "
        "--serve-artifacts (the default of MLflow 3)",
        artifact_uri);
  std::string why;
  http_with_retries("PUT",
                    fmt::format("{}/api/2.0/mlflow-artifacts/artifacts/{}/{}", trim_base(tracking_uri),
                                root, url_encode(file.filename().string())),
                    detail::read_text(file), "application/octet-stream", 300000, {}, why);
  return why;
}

}  // namespace

MlflowTracker::MlflowTracker(config::MlflowSection cfg, std::string run_name,
                             std::string config_yaml, std::map<std::string, std::string> tags,
                             std::string run_id)
    : cfg_(std::move(cfg)),
      run_name_(std::move(run_name)),
      config_yaml_(std::move(config_yaml)),
      tags_(std::move(tags)),
      run_id_(std::move(run_id)) {
  cfg_.tracking_uri = trim_base(cfg_.tracking_uri);
}

MlflowTracker::~MlflowTracker() {
  if (!started_ || finished_ || !active_) return;
  try {  // training failed: the MLflow run says so
    flush();
    call("POST", "runs/update",
         json{{"run_id", run_id_}, {"status", "FAILED"}, {"end_time", now_ms()}}.dump(),
         "marking the run FAILED");
  } catch (...) {  // nothing may escape a destructor
  }
}

void MlflowTracker::give_up(const std::string& what, const std::string& why) {
  if (!active_) return;
  active_ = false;
  log::warn(
      "MLflow tracking at {} stopped while {}: {}; training goes on (everything stays in the "
      "run folder's metrics.jsonl)",
      cfg_.tracking_uri, what, why);
}

std::optional<std::string> MlflowTracker::call(const std::string& method, const std::string& path,
                                               const std::string& body, const std::string& what,
                                               const std::vector<long>& allow, long* status) {
  if (!active_) return std::nullopt;
  std::string why;
  const HttpResponse r = http_with_retries(method, cfg_.tracking_uri + "/api/2.0/mlflow/" + path,
                                           body, "application/json", 30000, allow, why);
  if (!why.empty()) {
    give_up(what, why);
    return std::nullopt;
  }
  if (status != nullptr) *status = r.status;
  return r.body;
}

void MlflowTracker::begin() {
  if (!started_) start();
}

void MlflowTracker::start() {
  started_ = true;
  const auto parse = [&](const std::optional<std::string>& body, const std::string& what) {
    if (!body) return json();
    auto j = json::parse(*body, nullptr, false);
    if (j.is_discarded() || !j.is_object()) {
      give_up(what, "the answer is not a JSON object (is tracking_uri an MLflow server?)");
      return json();
    }
    return j;
  };
  if (run_id_.empty()) {
    // The experiment: by name, else created (a concurrent creator wins: look it up again).
    long status = 0;
    const std::string by_name = "experiments/get-by-name?experiment_name=" + url_encode(cfg_.experiment);
    json got = parse(call("GET", by_name, "", "looking up the experiment " + cfg_.experiment, {404},
                          &status),
                     "looking up the experiment");
    if (!active_) return;
    if (status == 404) {
      const json made = parse(call("POST", "experiments/create", json{{"name", cfg_.experiment}}.dump(),
                                   "creating the experiment " + cfg_.experiment, {400}, &status),
                              "creating the experiment");
      if (!active_) return;
      if (made.contains("experiment_id")) {
        experiment_id_ = made["experiment_id"].get<std::string>();
      } else {
        got = parse(call("GET", by_name, "", "looking up the experiment " + cfg_.experiment),
                    "looking up the experiment");
      }
    }
    if (experiment_id_.empty()) {
      if (!got.contains("experiment") || !got["experiment"].contains("experiment_id"))
        return give_up("looking up the experiment", "the answer has no experiment_id");
      experiment_id_ = got["experiment"]["experiment_id"].get<std::string>();
    }
    json tags = json::array();
    for (const auto& [k, v] : tags_)
      tags.push_back({{"key", k.substr(0, kMaxKey)}, {"value", v.substr(0, kMaxTagValue)}});
    const json run = parse(call("POST", "runs/create",
                                json{{"experiment_id", experiment_id_},
                                     {"run_name", run_name_},
                                     {"start_time", now_ms()},
                                     {"tags", tags}}
                                    .dump(),
                                "creating the run"),
                           "creating the run");
    if (!active_) return;
    if (!run.contains("run") || !run["run"].contains("info"))
      return give_up("creating the run", "the answer has no run");
    run_id_ = run["run"]["info"].value("run_id", "");
    artifact_uri_ = run["run"]["info"].value("artifact_uri", "");
  } else {  // a resumed run continues its MLflow run
    const json run = parse(call("GET", "runs/get?run_id=" + url_encode(run_id_), "",
                                "looking up the run " + run_id_),
                           "looking up the run");
    if (!active_) return;
    const json info = run.contains("run") ? run["run"].value("info", json::object()) : json::object();
    experiment_id_ = info.value("experiment_id", "");
    artifact_uri_ = info.value("artifact_uri", "");
    call("POST", "runs/update", json{{"run_id", run_id_}, {"status", "RUNNING"}}.dump(),
         "reopening the run");
  }
  // Params: the resolved config, flattened (at most 100 a request).
  const auto flat = flatten_yaml(config_yaml_, "the resolved config");
  json params = json::array();
  const auto send = [&] {
    if (params.empty()) return;
    call("POST", "runs/log-batch", json{{"run_id", run_id_}, {"params", params}}.dump(),
         "logging the params");
    params = json::array();
  };
  for (const auto& [k, v] : flat) {
    params.push_back({{"key", k.substr(0, kMaxKey)}, {"value", v.substr(0, kMaxParamValue)}});
    if (params.size() == kParamsPerBatch) send();
  }
  send();
  if (active_)
    log::info("MLflow: experiment {} ({}), run {} at {}", cfg_.experiment, experiment_id_, run_id_,
              cfg_.tracking_uri);
}

void MlflowTracker::log(const train::LogEvent& e) {
  if (!active_ || !started_) return;
  const int64_t t = now_ms();
  for (const auto& [k, v] : e.values) {
    if (!std::isfinite(v)) continue;  // JSON has no NaN; MLflow would refuse the batch
    // An epoch row repeats the last validation and the step's lr: one point each is enough.
    if (e.kind == "epoch" && (k.rfind("val/", 0) == 0 || k == "lr")) continue;
    pending_ += (pending_.empty() ? "" : ",") +
                json{{"key", k}, {"value", v}, {"timestamp", t}, {"step", e.step}}.dump();
    if (++pending_count_ == kMetricsPerBatch) flush();
  }
  const bool due = std::chrono::steady_clock::now() - last_flush_ >
                   std::chrono::duration<double>(kFlushSeconds);
  if (e.kind == "epoch" || e.kind == "val" || e.kind == "test" || due) flush();
}

void MlflowTracker::flush() {
  last_flush_ = std::chrono::steady_clock::now();
  if (pending_.empty() || !active_ || run_id_.empty()) return;
  const std::string body =
      fmt::format(R"({{"run_id":{},"metrics":[{}]}})", json(run_id_).dump(), pending_);
  pending_.clear();
  pending_count_ = 0;
  call("POST", "runs/log-batch", body, "logging metrics");
}

void MlflowTracker::finish(const std::vector<fs::path>& artifacts) {
  if (!started_ || finished_) return;
  flush();
  for (const auto& file : artifacts) {
    if (!active_ || !fs::exists(file)) continue;
    if (const std::string why = upload(cfg_.tracking_uri, artifact_uri_, file); !why.empty())
      give_up("uploading " + file.filename().string(), why);
  }
  call("POST", "runs/update",
       json{{"run_id", run_id_}, {"status", "FINISHED"}, {"end_time", now_ms()}}.dump(),
       "ending the run");
  finished_ = true;
}

bool log_artifact_to_tracked_run(const fs::path& run_dir, const fs::path& file) {
  const fs::path record = run_dir / "run.json";
  if (!fs::exists(record)) return false;
  const auto j = json::parse(detail::read_text(record), nullptr, false);
  if (!j.is_object() || !j.contains("mlflow") || !j["mlflow"].is_object()) return false;
  const json& m = j["mlflow"];
  const std::string uri = m.value("tracking_uri", ""), artifacts = m.value("artifact_uri", "");
  if (uri.empty() || artifacts.empty()) return false;
  if (const std::string why = upload(uri, artifacts, file); !why.empty()) {
    log::warn("MLflow: {} not logged to run {} at {}: {}", file.filename().string(),
              m.value("run_id", ""), uri, why);
    return false;
  }
  log::info("MLflow: logged {} to run {}", file.filename().string(), m.value("run_id", ""));
  return true;
}

}  // namespace lathe::run
