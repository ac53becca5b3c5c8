#include "coordinator/http_api.h"

#include <map>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/home.h"
#include "coordinator/views.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

// Invalid UTF-8 (a path segment echoed in an error, say) is replaced, never thrown.
HttpReply JsonReply(int status, const Json& doc) {
  return {status, "application/json", doc.dump(-1, ' ', false, Json::error_handler_t::replace)};
}

HttpReply ErrorReply(int status, const std::string& message) { return JsonReply(status, Json{{"error", message}}); }

HttpReply FromStatus(const absl::StatusOr<Json>& doc) {
  if (doc.ok()) return JsonReply(200, *doc);
  const int code = absl::IsNotFound(doc.status()) ? 404 : absl::IsInvalidArgument(doc.status()) ? 400 : 500;
  return ErrorReply(code, std::string(doc.status().message()));
}

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding ('+' is a space only in a query); false on a malformed escape or a decoded
// control character.
bool Decode(std::string_view in, std::string* out, bool plus_is_space) {
  out->clear();
  for (size_t i = 0; i < in.size(); ++i) {
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= in.size()) return false;
      const int hi = HexValue(in[i + 1]), lo = HexValue(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = static_cast<char>(hi * 16 + lo);
      i += 2;
    } else if (c == '+' && plus_is_space) {
      c = ' ';
    }
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return false;
    out->push_back(c);
  }
  return true;
}

std::string ContentTypeOf(const std::string& name) {
  auto ends = [&](std::string_view ext) {
    return name.size() >= ext.size() && name.compare(name.size() - ext.size(), ext.size(), ext) == 0;
  };
  if (ends(".html")) return "text/html; charset=utf-8";
  if (ends(".js")) return "text/javascript; charset=utf-8";
  if (ends(".css")) return "text/css; charset=utf-8";
  if (ends(".png")) return "image/png";
  if (ends(".svg")) return "image/svg+xml";
  if (ends(".map") || ends(".json")) return "application/json";
  return "application/octet-stream";
}

// A file inside `dir` (symlinks resolved), or 404.
HttpReply FileReply(const std::string& dir, const std::string& path) {
  if (dir.empty() || !CheckInsideDir(path, dir).ok()) return ErrorReply(404, "no such file");
  auto bytes = ReadFile(path);
  if (!bytes.ok()) return ErrorReply(404, "no such file");
  return {200, ContentTypeOf(path), std::move(*bytes)};
}

// Prometheus text format: label values escaped.
std::string Label(const std::string& v) {
  std::string out;
  for (char c : v) {
    if (c == '\\' || c == '"') out.push_back('\\');
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out.push_back(c);
  }
  return out;
}

std::string Number(double v) { return absl::StrFormat("%.17g", v); }

class Exposition {
 public:
  void Family(const std::string& name, const std::string& type, const std::string& help) {
    absl::StrAppend(&out_, "# HELP ", name, " ", help, "\n# TYPE ", name, " ", type, "\n");
  }
  void Sample(const std::string& name, const std::vector<std::pair<std::string, std::string>>& labels, double v) {
    out_ += name;
    if (!labels.empty()) {
      out_ += "{";
      for (size_t i = 0; i < labels.size(); ++i) {
        absl::StrAppend(&out_, i ? "," : "", labels[i].first, "=\"", Label(labels[i].second), "\"");
      }
      out_ += "}";
    }
    absl::StrAppend(&out_, " ", Number(v), "\n");
  }
  void Counts(const std::string& name, const std::string& type, const std::string& help, const std::string& label,
              const std::map<std::string, int64_t>& counts) {
    Family(name, type, help);
    for (const auto& [k, n] : counts) Sample(name, {{label, k}}, static_cast<double>(n));
  }
  void Scalar(const std::string& name, const std::string& type, const std::string& help, double v) {
    Family(name, type, help);
    Sample(name, {}, v);
  }
  void Histo(const std::string& name, const std::string& help, const Histogram& h) {
    Family(name, "histogram", help);
    int64_t cumulative = 0;
    for (size_t i = 0; i < Histogram::kBounds.size(); ++i) {
      cumulative += h.counts[i];
      Sample(name + "_bucket", {{"le", Number(Histogram::kBounds[i])}}, static_cast<double>(cumulative));
    }
    Sample(name + "_bucket", {{"le", "+Inf"}}, static_cast<double>(h.count));
    Sample(name + "_sum", {}, h.sum);
    Sample(name + "_count", {}, static_cast<double>(h.count));
  }
  std::string Take() { return std::move(out_); }

 private:
  std::string out_;
};

// Every state a record can be in gets a sample, zero or not, so series do not vanish.
template <typename Map>
std::map<std::string, int64_t> ByState(const Map& records, std::vector<std::string> states) {
  std::map<std::string, int64_t> counts;
  for (const auto& s : states) counts[s] = 0;
  for (const auto& [id, r] : records) ++counts[r.state];
  return counts;
}

}  // namespace

std::string PrometheusText(const CoordinatorSnapshot& s) {
  using namespace state;
  Exposition e;
  const CoordinatorState& st = s.state;
  e.Counts("dd2_runs", "gauge", "Runs by state.", "state",
           ByState(st.runs, {kPending, kRunning, kSucceeded, kFailed, kCancelled, kStopped}));
  e.Counts("dd2_jobs", "gauge", "Jobs by state.", "state",
           ByState(st.jobs, {kPending, kWaiting, kReady, kAssigned, kRunning, kRetrying, kSucceeded, kFailed,
                             kCancelled, kStopped}));
  e.Counts("dd2_attempts", "gauge",
           "Attempts by state; the terminal states (succeeded, failed, lost, preempted, cancelled) say how they ended.",
           "state", ByState(st.attempts, {kAssigned, kRunning, kSucceeded, kFailed, kLost, kPreempted, kCancelled}));
  e.Counts("dd2_workers", "gauge", "Workers by state.", "state", ByState(st.workers, {kAlive, kSuspect, kLost}));
  e.Scalar("dd2_ready_jobs", "gauge", "Jobs ready and waiting for a worker.", static_cast<double>(st.ready.size()));
  std::map<std::string, int64_t> checkpoints = {{kCommitted, 0}, {kDeleting, 0}, {kDeleted, 0}};
  for (const auto& [job, steps] : st.checkpoints) {
    for (const auto& [step, c] : steps) ++checkpoints[c.state];
  }
  e.Counts("dd2_checkpoints", "gauge", "Checkpoints by state.", "state", checkpoints);
  e.Scalar("dd2_uptime_seconds", "gauge", "Seconds since this coordinator process started.",
           static_cast<double>(s.info.uptime_ms) / 1000.0);
  const std::pair<const char*, std::pair<const char*, int64_t>> counters[] = {
      {"dd2_frames_total", {"Frames received.", s.info.frames}},
      {"dd2_malformed_frames_total", {"Frames that did not decode or were invalid.", s.info.malformed_frames}},
      {"dd2_rejected_frames_total", {"Messages a peer's role may not send.", s.info.rejected_frames}},
      {"dd2_rejected_connections_total", {"CURVE handshakes refused.", s.info.rejected_connections}},
      {"dd2_send_failures_total", {"Messages that could not be sent.", s.info.send_failures}},
      {"dd2_refused_paths_total", {"Checkpoint or outputs paths outside their job's folder.", s.info.refused_paths}},
      {"dd2_store_errors_total", {"SQLite transactions that failed; nothing of them applied.", s.info.store_errors}},
  };
  for (const auto& [name, help_value] : counters) {
    e.Scalar(name, "counter", help_value.first, static_cast<double>(help_value.second));
  }
  e.Counts("dd2_events_total", "counter",
           "Events committed since start, by kind (worker_suspect: heartbeat misses, worker_lost, attempt_lost, "
           "checkpoint_committed, checkpoint_deleted, job_succeeded, ...).",
           "kind", s.stats.events);
  e.Histo("dd2_sqlite_commit_seconds", "One SQLite transaction of the coordinator.", s.stats.commit_seconds);
  e.Histo("dd2_schedule_pass_seconds", "One scheduling pass over the ready jobs.", s.stats.schedule_seconds);
  e.Histo("dd2_snapshot_seconds", "One copy of the coordinator's state for the HTTP endpoint (made when asked).",
          s.stats.snapshot_seconds);
  // Running jobs only: the label set is bounded by the slots in the fleet.
  e.Family("dd2_job_step", "gauge", "Step reached by a running job.");
  for (const auto& [id, j] : st.jobs) {
    if (j.state == kRunning) e.Sample("dd2_job_step", {{"run", j.run_id}, {"job", j.name}}, static_cast<double>(j.step));
  }
  e.Family("dd2_job_total_steps", "gauge", "Steps a running job will take.");
  for (const auto& [id, j] : st.jobs) {
    if (j.state == kRunning) e.Sample("dd2_job_total_steps", {{"run", j.run_id}, {"job", j.name}}, static_cast<double>(j.total));
  }
  e.Family("dd2_job_metric", "gauge", "Latest training metric of a running job (its keys are the job type's).");
  for (const auto& [id, j] : st.jobs) {
    if (j.state != kRunning) continue;
    auto m = st.latest_metrics.find(id);
    if (m == st.latest_metrics.end()) continue;
    for (const auto& [key, v] : m->second) e.Sample("dd2_job_metric", {{"run", j.run_id}, {"job", j.name}, {"key", key}}, v);
  }
  return e.Take();
}

HttpReply Route(const CoordinatorSnapshot& s, std::string_view method, std::string_view target,
                const MetricSeries& series, const std::string& dashboard_dir) {
  if (method != "GET" && method != "HEAD") return ErrorReply(405, "only GET and HEAD");
  const size_t q = target.find('?');
  // This absl's StrSplit takes no std::string_view.
  const std::string path_part(target.substr(0, q));
  const std::string query(q == std::string_view::npos ? std::string_view() : target.substr(q + 1));
  std::vector<std::string> parts;
  const std::vector<std::string> segments = absl::StrSplit(path_part, '/', absl::SkipEmpty());
  for (const std::string& raw : segments) {
    std::string p;
    if (!Decode(raw, &p, false) || p == "." || p == ".." || p.find('/') != std::string::npos) {
      return ErrorReply(400, "malformed path");
    }
    parts.push_back(std::move(p));
  }
  std::map<std::string, std::string> params;
  const std::vector<std::string> pairs = absl::StrSplit(query, '&', absl::SkipEmpty());
  for (const std::string& kv : pairs) {
    const size_t eq = kv.find('=');
    std::string k, v;
    if (!Decode(kv.substr(0, eq), &k, true) || (eq != std::string::npos && !Decode(kv.substr(eq + 1), &v, true))) {
      return ErrorReply(400, "malformed query");
    }
    params[k] = v;
  }
  const size_t n = parts.size();
  if (n == 0) return FileReply(dashboard_dir, dashboard_dir + "/index.html");
  if (n == 2 && parts[0] == "assets") return FileReply(dashboard_dir, dashboard_dir + "/assets/" + parts[1]);
  if (n == 1 && parts[0] == "metrics") return {200, "text/plain; version=0.0.4; charset=utf-8", PrometheusText(s)};
  if (n < 3 || parts[0] != "api" || parts[1] != "v1") return ErrorReply(404, "no such page");
  const std::string& what = parts[2];
  if (n == 3 && what == "status") return FromStatus(StatusDocument(s.state, "", s.info));
  if (n == 3 && what == "runs") return FromStatus(StatusDocument(s.state, "", s.info, /*brief=*/true));
  if (n == 3 && what == "workers") return JsonReply(200, WorkersDocument(s.state, s.now_ms));
  if (n == 3 && what == "sweeps") return FromStatus(SweepsDocument(s.state, ""));
  if (n == 4 && what == "sweeps") return FromStatus(SweepsDocument(s.state, parts[3]));
  if (what != "runs" || n < 4) return ErrorReply(404, "no such page");
  const std::string& run = parts[3];
  if (n == 4) return FromStatus(StatusDocument(s.state, run, s.info));
  if (n == 5 && parts[4] == "jobs") return FromStatus(JobsDocument(s.state, run));
  if (n == 5 && parts[4] == "checkpoints") return FromStatus(CheckpointsDocument(s.state, run));
  if (n == 5 && parts[4] == "metrics") return FromStatus(MetricsDocument(s.state, run, params["job"], series));
  if (n == 7 && parts[4] == "jobs" && parts[6] == "samples.png") {
    if (!s.state.jobs.count(run + "/" + parts[5])) return ErrorReply(404, "no such job");
    const std::string job_dir = s.artifacts_root + "/" + run + "/" + parts[5];
    return FileReply(job_dir, job_dir + "/samples.png");
  }
  return ErrorReply(404, "no such page");
}

}  // namespace dd2
