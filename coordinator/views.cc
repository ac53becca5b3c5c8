#include "coordinator/views.h"

#include <algorithm>
#include <cmath>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

Json JobJson(const CoordinatorState& s, const JobRecord& j) {
  Json out = {{"id", j.id},       {"name", j.name},       {"type", j.type},
              {"state", j.state}, {"attempts", j.attempts}, {"step", j.step},
              {"total", j.total}, {"failure", j.failure},   {"updated_ms", j.updated_ms},
              {"workers", j.workers}, {"device", j.device}, {"retries", j.retries},
              {"after", Json::parse(j.after_json, nullptr, false)},
              {"identity", j.identity}, {"reused_from", j.reused_from}};
  Json m = Json::object();
  if (auto it = s.latest_metrics.find(j.id); it != s.latest_metrics.end()) {
    for (const auto& [k, v] : it->second) m[k] = v;
  }
  out["metrics"] = m;
  return out;
}

Json AttemptJson(const AttemptRecord& a) {
  std::vector<std::string> workers = absl::StrSplit(a.worker_ids, ',', absl::SkipEmpty());
  return {{"id", a.id},           {"number", a.number},       {"state", a.state},
          {"workers", workers},   {"started_ms", a.started_ms}, {"finished_ms", a.finished_ms},
          {"exit_code", a.exit_code}, {"signal", a.signal},   {"cause", a.cause}};
}

const std::vector<std::string>& JobsOf(const CoordinatorState& s, const std::string& run_id) {
  static const std::vector<std::string> kNone;
  auto it = s.jobs_by_run.find(run_id);
  return it == s.jobs_by_run.end() ? kNone : it->second;
}

// 1 for a finished job, step/total for one in progress.
double JobFraction(const JobRecord& j) {
  if (j.state == state::kSucceeded) return 1.0;
  return j.total > 0 ? static_cast<double>(j.step) / static_cast<double>(j.total) : 0.0;
}

Json RunJson(const CoordinatorState& s, const RunRecord& r, bool with_jobs = true) {
  Json counts = Json::object();
  int64_t done = 0, total = 0;
  double progress = 0;
  Json jobs = Json::array();
  for (const auto& id : JobsOf(s, r.id)) {
    const JobRecord& j = s.jobs.at(id);
    counts[j.state] = counts.value(j.state, 0) + 1;
    ++total;
    if (j.state == state::kSucceeded) ++done;
    progress += JobFraction(j);
    if (with_jobs) jobs.push_back(JobJson(s, j));
  }
  auto sweep = s.sweep_of_run.find(r.id);
  Json run{{"id", r.id},
           {"name", r.name},
           {"state", r.state},
           {"submission_id", r.submission_id},
           {"priority", r.priority},
           {"created_ms", r.created_ms},
           {"finished_ms", r.finished_ms},
           {"jobs_total", total},
           {"jobs_succeeded", done},
           {"job_states", counts},
           {"progress", total > 0 ? progress / static_cast<double>(total) : 0.0},
           {"sweep", sweep == s.sweep_of_run.end() ? "" : sweep->second}};
  if (with_jobs) run["jobs"] = std::move(jobs);
  return run;
}

// The latest metrics of the job named `job` in `run_id` (empty when there is none).
Json JobMetrics(const CoordinatorState& s, const std::string& run_id, const std::string& job) {
  Json m = Json::object();
  if (auto it = s.latest_metrics.find(absl::StrCat(run_id, "/", job)); it != s.latest_metrics.end()) {
    for (const auto& [k, v] : it->second) m[k] = v;
  }
  return m;
}

Json SweepBrief(const CoordinatorState& s, const SweepRecord& w) {
  Json states = Json::object();
  int64_t open = 0;
  auto pts = s.points.find(w.id);
  const size_t n = pts == s.points.end() ? 0 : pts->second.size();
  if (pts != s.points.end()) {
    for (const auto& p : pts->second) {
      const std::string& st = s.runs.at(p.run_id).state;
      states[st] = states.value(st, 0) + 1;
      if (!IsTerminal(st)) ++open;
    }
  }
  const proto::SweepSpec& spec = s.sweep_specs.at(w.id);
  return {{"id", w.id},
          {"name", w.name},
          {"created_ms", w.created_ms},
          {"points", n},
          {"state", open > 0 ? "running" : "finished"},
          {"point_states", states},
          {"keys", std::vector<std::string>(spec.keys().begin(), spec.keys().end())},
          {"early_stop", spec.early_stop().rungs_size() > 0},
          {"source", spec.source()}};
}

Json SweepDetail(const CoordinatorState& s, const SweepRecord& w) {
  Json out = SweepBrief(s, w);
  const proto::SweepSpec& spec = s.sweep_specs.at(w.id);
  const proto::Objective& obj = spec.objective();
  const bool maximize = obj.mode() == "max";
  // Halving decisions by point: the rung it was stopped at, and its value at each rung.
  std::map<std::string, Json> rungs_of;
  std::map<std::string, int64_t> stopped_at;
  if (auto d = s.decisions.find(w.id); d != s.decisions.end()) {
    for (const auto& [rung, rows] : d->second) {
      for (const auto& r : rows) {
        rungs_of[r.identity][std::to_string(rung)] = {{"value", r.has_value ? Json(r.value) : Json(nullptr)},
                                                      {"kept", r.kept}};
        if (!r.kept && !stopped_at.count(r.identity)) stopped_at[r.identity] = rung;
      }
    }
  }
  Json points = Json::array();
  int best = -1;
  double best_value = 0;
  std::map<std::string, std::vector<size_t>> groups;  // values minus seed -> points
  auto pts = s.points.find(w.id);
  if (pts != s.points.end()) {
    for (const auto& p : pts->second) {
      const RunRecord& run = s.runs.at(p.run_id);
      Json values = Json::parse(p.values_json, nullptr, false);
      Json final = obj.job().empty() ? Json::object() : JobMetrics(s, run.id, obj.job());
      Json row = RunJson(s, run, /*with_jobs=*/false);
      Json point = {{"number", p.number},
                    {"identity", p.identity},
                    {"values", values},
                    {"run", run.id},
                    {"state", run.state},
                    {"progress", row["progress"]},
                    {"final", final},
                    {"stopped_at_rung", stopped_at.count(p.identity) ? Json(stopped_at[p.identity]) : Json(nullptr)},
                    {"rungs", rungs_of.count(p.identity) ? rungs_of[p.identity] : Json::object()},
                    {"best", false}};
      Json all = Json::object();
      for (const auto& id : JobsOf(s, run.id)) {
        const JobRecord& j = s.jobs.at(id);
        Json m = JobMetrics(s, run.id, j.name);
        if (!m.empty()) all[j.name] = m;
      }
      point["metrics"] = all;
      if (run.state == state::kSucceeded && final.contains(obj.metric()) && final[obj.metric()].is_number()) {
        const double v = final[obj.metric()].get<double>();
        if (best < 0 || (maximize ? v > best_value : v < best_value)) {
          best = static_cast<int>(points.size());
          best_value = v;
        }
      }
      Json key = values;
      if (key.is_object()) key.erase("seed");
      groups[key.dump()].push_back(points.size());
      points.push_back(point);
    }
  }
  if (best >= 0) points[best]["best"] = true;
  // Mean and sample standard deviation over seeds of every final metric.
  Json grouped = Json::array();
  for (const auto& [key, members] : groups) {
    std::map<std::string, std::vector<double>> samples;
    for (size_t i : members) {
      if (points[i]["state"] != state::kSucceeded) continue;
      for (auto& [k, v] : points[i]["final"].items()) {
        if (v.is_number()) samples[k].push_back(v.get<double>());
      }
    }
    Json stats = Json::object();
    for (const auto& [k, xs] : samples) {
      double mean = 0;
      for (double x : xs) mean += x;
      mean /= static_cast<double>(xs.size());
      double var = 0;
      for (double x : xs) var += (x - mean) * (x - mean);
      const double std = xs.size() > 1 ? std::sqrt(var / static_cast<double>(xs.size() - 1)) : 0.0;
      stats[k] = {{"mean", mean}, {"std", std}, {"n", xs.size()}};
    }
    Json nums = Json::array();
    for (size_t i : members) nums.push_back(points[i]["number"]);
    grouped.push_back({{"values", Json::parse(key)}, {"points", nums}, {"final", stats}});
  }
  out["objective"] = {{"job", obj.job()}, {"metric", obj.metric()}, {"mode", obj.mode()}};
  out["early_stop"] = nullptr;  // the brief's yes/no becomes the policy, or null
  if (spec.early_stop().rungs_size() > 0) {
    const auto& e = spec.early_stop();
    out["early_stop"] = {{"job", e.job()}, {"metric", e.metric()}, {"mode", e.mode()}, {"keep", e.keep()},
                         {"rungs", std::vector<uint64_t>(e.rungs().begin(), e.rungs().end())}};
  }
  out["point_rows"] = points;
  out["grouped"] = grouped;
  return out;
}

}  // namespace

absl::StatusOr<Json> StatusDocument(const CoordinatorState& s, const std::string& run_id, const CoordinatorInfo& info,
                                    bool brief) {
  if (!run_id.empty()) {
    auto it = s.runs.find(run_id);
    if (it == s.runs.end()) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
    return Json{{"run", RunJson(s, it->second)}};
  }
  std::vector<const RunRecord*> runs;
  for (const auto& [id, r] : s.runs) runs.push_back(&r);
  std::sort(runs.begin(), runs.end(), [](auto* a, auto* b) { return a->seq < b->seq; });
  Json list = Json::array();
  for (const auto* r : runs) list.push_back(RunJson(s, *r, !brief));
  Json workers = {{"alive", 0}, {"suspect", 0}, {"lost", 0}};
  for (const auto& [id, w] : s.workers) workers[w.state] = workers.value(w.state, 0) + 1;
  return Json{{"coordinator", {{"endpoint", info.endpoint},
                               {"uptime_ms", info.uptime_ms},
                               {"frames", info.frames},
                               {"malformed_frames", info.malformed_frames},
                               {"send_failures", info.send_failures},
                               {"rejected_frames", info.rejected_frames},
                               {"rejected_connections", info.rejected_connections},
                               {"refused_paths", info.refused_paths},
                               {"store_errors", info.store_errors},
                               {"authentication", info.keyed ? "curve" : "none (loopback)"},
                               {"workers", workers}}},
              {"runs", list}};
}

absl::StatusOr<Json> JobsDocument(const CoordinatorState& s, const std::string& run_id) {
  auto run = s.runs.find(run_id);
  if (run == s.runs.end()) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
  Json jobs = Json::array();
  for (const auto& id : JobsOf(s, run_id)) {
    Json j = JobJson(s, s.jobs.at(id));
    Json attempts = Json::array();
    if (auto it = s.attempts_by_job.find(id); it != s.attempts_by_job.end()) {
      for (const auto& aid : it->second) attempts.push_back(AttemptJson(s.attempts.at(aid)));
    }
    j["attempts_detail"] = attempts;
    jobs.push_back(j);
  }
  return Json{{"run_id", run_id}, {"state", run->second.state}, {"jobs", jobs}};
}

absl::StatusOr<Json> CheckpointsDocument(const CoordinatorState& s, const std::string& run_id) {
  if (!s.runs.count(run_id)) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
  Json list = Json::array();
  for (const auto& job_id : JobsOf(s, run_id)) {
    auto it = s.checkpoints.find(job_id);
    if (it == s.checkpoints.end()) continue;
    for (const auto& [step, c] : it->second) {
      list.push_back({{"job", s.jobs.at(job_id).name}, {"step", step}, {"state", c.state}, {"path", c.path},
                      {"sha256", c.sha256}, {"bytes", c.bytes}, {"attempt", c.attempt_id},
                      {"created_ms", c.created_ms}, {"metrics", Json::parse(c.metrics_json, nullptr, false)}});
    }
  }
  return Json{{"run", run_id}, {"checkpoints", list}};
}

// A worker's SLURM task, or null outside SLURM.
Json SlurmOf(const WorkerRecord& w) {
  if (w.slurm_job_id.empty()) return nullptr;
  return {{"job_id", w.slurm_job_id}, {"procid", w.slurm_procid}, {"localid", w.slurm_localid},
          {"restart_count", w.slurm_restart_count}, {"node", w.slurm_node}};
}

Json WorkersDocument(const CoordinatorState& s, int64_t now_ms) {
  Json list = Json::array();
  const auto held = s.ActiveAttemptsByWorker();
  const std::vector<std::string> none;
  for (const auto& [id, w] : s.workers) {
    auto it = held.find(id);
    const std::vector<std::string>& active = it == held.end() ? none : it->second;
    auto live = s.live.find(id);
    list.push_back({{"id", id},         {"host", w.host},   {"device", w.device},
                    {"device_index", w.device_index}, {"slots", w.slots},
                    {"used", active.size()}, {"state", w.state}, {"pid", w.pid},
                    {"registered_ms", w.registered_ms},
                    {"connected", live != s.live.end() && !live->second.peer.empty()},
                    {"silent_ms", live != s.live.end() ? now_ms - live->second.last_seen_ms : -1},
                    {"attempts", active}, {"slurm", SlurmOf(w)}});
  }
  return Json{{"workers", list}};
}

Json SlurmDocument(const CoordinatorState& s, const SlurmInfo& info) {
  Json list = Json::array();
  for (const auto& [id, a] : s.allocations) {
    Json workers = Json::array();
    for (const auto& [wid, w] : s.workers) {
      if (!a.slurm_job_id.empty() && w.slurm_job_id == a.slurm_job_id) {
        workers.push_back({{"id", wid}, {"state", w.state}, {"procid", w.slurm_procid},
                           {"restart_count", w.slurm_restart_count}, {"node", w.slurm_node}});
      }
    }
    list.push_back({{"id", a.id}, {"seq", a.seq}, {"origin", a.origin}, {"slurm_job_id", a.slurm_job_id},
                    {"nodes", a.nodes}, {"workers_per_node", a.workers_per_node}, {"device", a.device},
                    {"partition", a.partition}, {"time_limit", a.time_limit}, {"account", a.account},
                    {"state", a.state}, {"reason", a.reason}, {"restarts", a.restarts},
                    {"created_ms", a.created_ms}, {"updated_ms", a.updated_ms}, {"workers", workers}});
  }
  std::sort(list.begin(), list.end(), [](const Json& x, const Json& y) { return x["seq"] < y["seq"]; });
  return Json{{"allocations", list},
              {"autoscale", {{"enabled", info.autoscale}, {"backoff_until_ms", info.backoff_until_ms},
                             {"sbatch_failures", info.sbatch_failures}, {"last_decision", info.last_decision}}},
              {"last_poll_ms", info.last_poll_ms},
              {"poll_error", info.poll_error}};
}

absl::StatusOr<Json> SweepsDocument(const CoordinatorState& s, const std::string& sweep_id) {
  if (!sweep_id.empty()) {
    auto it = s.sweeps.find(sweep_id);
    if (it == s.sweeps.end()) return absl::NotFoundError(absl::StrCat("no sweep '", sweep_id, "'"));
    return Json{{"sweep", SweepDetail(s, it->second)}};
  }
  std::vector<const SweepRecord*> sweeps;
  for (const auto& [id, w] : s.sweeps) sweeps.push_back(&w);
  std::sort(sweeps.begin(), sweeps.end(), [](auto* a, auto* b) { return a->seq < b->seq; });
  Json list = Json::array();
  for (const auto* w : sweeps) list.push_back(SweepBrief(s, *w));
  return Json{{"sweeps", list}};
}

absl::StatusOr<Json> CompareDocument(const CoordinatorState& s, const std::vector<std::string>& run_ids) {
  if (run_ids.empty()) return absl::InvalidArgumentError("compare needs at least one run");
  Json runs = Json::array();
  std::map<std::string, std::map<std::string, std::vector<Json>>> params;  // job -> key -> per run
  for (size_t r = 0; r < run_ids.size(); ++r) {
    auto it = s.runs.find(run_ids[r]);
    if (it == s.runs.end()) return absl::NotFoundError(absl::StrCat("no run '", run_ids[r], "'"));
    Json jobs = Json::object();
    for (const auto& id : JobsOf(s, it->first)) {
      const JobRecord& j = s.jobs.at(id);
      jobs[j.name] = {{"type", j.type}, {"state", j.state}, {"reused_from", j.reused_from},
                      {"metrics", JobMetrics(s, it->first, j.name)}};
      Json p = Json::parse(j.params_json, nullptr, false);
      if (!p.is_object()) continue;
      for (auto& [k, v] : p.items()) {
        auto& slot = params[j.name][k];
        slot.resize(run_ids.size(), nullptr);
        slot[r] = v;
      }
    }
    Json values = nullptr;
    auto sweep = s.sweep_of_run.find(it->first);
    if (sweep != s.sweep_of_run.end()) {
      for (const auto& p : s.points.at(sweep->second)) {
        if (p.run_id == it->first) values = Json::parse(p.values_json, nullptr, false);
      }
    }
    runs.push_back({{"id", it->first}, {"name", it->second.name}, {"state", it->second.state},
                    {"sweep", sweep == s.sweep_of_run.end() ? "" : sweep->second}, {"values", values}, {"jobs", jobs}});
  }
  Json differing = Json::array();
  for (auto& [job, keys] : params) {
    for (auto& [key, vals] : keys) {
      vals.resize(run_ids.size(), nullptr);
      if (std::adjacent_find(vals.begin(), vals.end(), std::not_equal_to<>()) != vals.end()) {
        differing.push_back({{"job", job}, {"key", key}, {"values", vals}});
      }
    }
  }
  return Json{{"runs", runs}, {"differing_params", differing}};
}

absl::StatusOr<Json> MetricsDocument(
    const CoordinatorState& s, const std::string& run_id, const std::string& job_name,
    const std::function<absl::StatusOr<std::vector<MetricRecord>>(const std::string& job_id)>& series) {
  if (!s.runs.count(run_id)) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
  Json rows = Json::array();
  bool found = job_name.empty();
  for (const auto& job_id : JobsOf(s, run_id)) {
    const std::string& name = s.jobs.at(job_id).name;
    if (!job_name.empty() && name != job_name) continue;
    found = true;
    auto metrics = series(job_id);
    if (!metrics.ok()) return metrics.status();
    for (const auto& m : *metrics) rows.push_back({{"job", name}, {"key", m.key}, {"step", m.step}, {"value", m.value}});
  }
  if (!found) return absl::NotFoundError(absl::StrCat("no job '", job_name, "' in run '", run_id, "'"));
  return Json{{"run", run_id}, {"metrics", rows}};
}

}  // namespace dd2
