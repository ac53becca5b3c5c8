#include "cluster/sweep_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "cluster/ctl_output.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

std::string ValueText(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_number_float()) return absl::StrFormat("%.4g", v.get<double>());
  return v.dump();
}

std::string Num(const Json& v) { return v.is_number() ? absl::StrFormat("%.4g", v.get<double>()) : "-"; }

// The metrics to show as columns: the usual eval metrics first, then any others (at most 6).
std::vector<std::string> MetricColumns(const Json& points, const std::string& objective) {
  static const std::vector<std::string> kPreferred = {"fid", "inception_score", "precision", "recall",
                                                      "class_accuracy", "loss"};
  std::set<std::string> seen;
  for (const auto& p : points) {
    for (auto& [k, v] : p["final"].items()) {
      if (v.is_number()) seen.insert(k);
    }
  }
  std::vector<std::string> out;
  if (!objective.empty() && seen.count(objective)) out.push_back(objective);
  for (const auto& k : kPreferred) {
    if (seen.count(k) && k != objective) out.push_back(k);
  }
  for (const auto& k : seen) {
    if (out.size() >= 6) break;
    if (std::find(out.begin(), out.end(), k) == out.end()) out.push_back(k);
  }
  return out;
}

void PrintSweep(const Json& w) {
  std::string states;
  for (auto& [k, v] : w["point_states"].items()) absl::StrAppend(&states, states.empty() ? "" : ", ", v.get<int64_t>(), " ", k);
  std::printf("sweep %s (%s): %s, %lld points (%s)\n", w["id"].get<std::string>().c_str(),
              w["name"].get<std::string>().c_str(), w["state"].get<std::string>().c_str(),
              static_cast<long long>(w["points"].get<int64_t>()), states.c_str());
  const Json& obj = w["objective"];
  const std::string metric = obj.value("metric", "");
  if (!metric.empty()) {
    std::printf("objective: %s of %s (%s); * marks the best finished point\n", metric.c_str(),
                obj.value("job", "").c_str(), obj.value("mode", "min").c_str());
  }
  if (w.contains("early_stop") && w["early_stop"].is_object()) {
    const Json& e = w["early_stop"];
    std::vector<std::string> rungs;
    for (const auto& r : e["rungs"]) rungs.push_back(std::to_string(r.get<int64_t>()));
    std::printf("early stop: %s of %s (%s) at steps %s, keep %.2g\n", e["metric"].get<std::string>().c_str(),
                e["job"].get<std::string>().c_str(), e["mode"].get<std::string>().c_str(),
                absl::StrJoin(rungs, ", ").c_str(), e["keep"].get<double>());
  }
  std::vector<std::string> keys;
  for (const auto& k : w["keys"]) keys.push_back(k);
  const auto columns = MetricColumns(w["point_rows"], metric);
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"#"};
  head.insert(head.end(), keys.begin(), keys.end());
  for (const char* h : {"STATE", "PROGRESS"}) head.push_back(h);
  for (const auto& c : columns) head.push_back(absl::AsciiStrToUpper(c));
  head.push_back("RUN");
  rows.push_back(head);
  for (const auto& p : w["point_rows"]) {
    std::vector<std::string> r = {absl::StrCat(p["number"].get<int64_t>(), p["best"].get<bool>() ? "*" : "")};
    for (const auto& k : keys) r.push_back(p["values"].contains(k) ? ValueText(p["values"][k]) : "-");
    std::string state = p["state"];
    if (!p["stopped_at_rung"].is_null()) absl::StrAppend(&state, " @", p["stopped_at_rung"].get<int64_t>());
    r.push_back(state);
    r.push_back(Bar(p["progress"].get<double>(), 12));
    for (const auto& c : columns) r.push_back(Num(p["final"].value(c, Json())));
    r.push_back(p["run"]);
    rows.push_back(r);
  }
  PrintTable(rows);
  bool replicated = false;
  for (const auto& g : w["grouped"]) replicated = replicated || g["points"].size() > 1;
  if (!replicated) return;
  std::printf("\nover seeds (mean ± std of finished points):\n");
  std::vector<std::vector<std::string>> grows;
  std::vector<std::string> ghead;
  for (const auto& k : keys) {
    if (k != "seed") ghead.push_back(k);
  }
  ghead.push_back("N");
  for (const auto& c : columns) ghead.push_back(absl::AsciiStrToUpper(c));
  grows.push_back(ghead);
  for (const auto& g : w["grouped"]) {
    std::vector<std::string> r;
    for (const auto& k : keys) {
      if (k != "seed") r.push_back(g["values"].contains(k) ? ValueText(g["values"][k]) : "-");
    }
    int64_t n = 0;
    for (auto& [k, st] : g["final"].items()) n = std::max(n, st["n"].get<int64_t>());
    r.push_back(std::to_string(n));
    for (const auto& c : columns) {
      r.push_back(g["final"].contains(c) ? absl::StrFormat("%.4g ± %.2g", g["final"][c]["mean"].get<double>(),
                                                           g["final"][c]["std"].get<double>())
                                         : "-");
    }
    grows.push_back(r);
  }
  PrintTable(grows);
}

absl::StatusOr<Json> FetchSweep(CoordinatorClient& client, const std::string& sweep_id) {
  proto::Envelope req;
  req.mutable_sweeps()->set_sweep_id(sweep_id);
  return CallJson(client, req);
}

}  // namespace

int SubmitSweep(CoordinatorClient& client, proto::SweepSpec sweep, const std::string& submission_id,
                const std::string& sweep_id, bool no_reuse, bool json, bool wait) {
  if (no_reuse) {
    for (auto& p : *sweep.mutable_points()) p.mutable_spec()->set_no_reuse(true);
  }
  proto::Envelope req;
  auto* s = req.mutable_sweep_submit();
  *s->mutable_sweep() = sweep;
  s->set_submission_id(submission_id);
  s->set_sweep_id(sweep_id);
  auto reply = client.Call(req);
  if (!reply.ok()) return Fail(reply.status());
  const auto& r = reply->sweep_submit_reply();
  if (json && !wait) {
    Json runs = Json::array();
    for (const auto& id : r.run_ids()) runs.push_back(id);
    std::printf("%s\n", Json{{"sweep_id", r.sweep_id()}, {"added", r.added()}, {"existing", r.existing()},
                             {"run_ids", runs}, {"submission_id", submission_id}}
                            .dump()
                            .c_str());
    return kExitOk;
  }
  if (!json) {
    std::printf("sweep %s: %u new point(s), %u already there (%d in the file)\n", r.sweep_id().c_str(), r.added(),
                r.existing(), sweep.points_size());
  }
  if (!wait) return kExitOk;
  const bool tty = ::isatty(1);
  while (true) {
    auto st = FetchSweep(client, r.sweep_id());
    if (!st.ok()) return Fail(st.status());
    const Json& w = (*st)["sweep"];
    if (tty && !json) {
      std::printf("\033[H\033[2J");
      PrintSweep(w);
    }
    if (w["state"] == "finished") {
      if (json) {
        std::printf("%s\n", st->dump().c_str());
      } else if (!tty) {
        PrintSweep(w);
      }
      for (const auto& p : w["point_rows"]) {
        if (p["state"] != "succeeded" && p["state"] != "stopped") return kExitFailed;
      }
      return kExitOk;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 1000 : 300));
  }
}

int SweepList(CoordinatorClient& client, bool json) {
  auto st = FetchSweep(client, "");
  if (!st.ok()) return Fail(st.status());
  if (json) {
    std::printf("%s\n", st->dump().c_str());
    return kExitOk;
  }
  std::vector<std::vector<std::string>> rows = {{"SWEEP", "NAME", "STATE", "POINTS", "KEYS", "EARLY STOP", "SOURCE"}};
  for (const auto& w : (*st)["sweeps"]) {
    std::vector<std::string> keys;
    for (const auto& k : w["keys"]) keys.push_back(k);
    rows.push_back({w["id"], w["name"], w["state"], std::to_string(w["points"].get<int64_t>()), absl::StrJoin(keys, ","),
                    w["early_stop"].get<bool>() ? "yes" : "no", w["source"]});
  }
  if (rows.size() == 1) {
    std::printf("no sweeps yet; submit a run.yaml with a `sweep:` block (examples/sweep-k.yaml)\n");
    return kExitOk;
  }
  PrintTable(rows);
  return kExitOk;
}

int SweepStatus(CoordinatorClient& client, const std::string& sweep_id, bool json, bool watch) {
  while (true) {
    auto st = FetchSweep(client, sweep_id);
    if (!st.ok()) return Fail(st.status());
    if (watch) std::printf("\033[H\033[2J");
    if (json) {
      std::printf("%s\n", st->dump().c_str());
    } else {
      PrintSweep((*st)["sweep"]);
    }
    std::fflush(stdout);
    if (!watch || (*st)["sweep"]["state"] == "finished") return kExitOk;
    std::this_thread::sleep_for(std::chrono::seconds(1));
  }
}

int Cancel(CoordinatorClient& client, const std::string& target, bool json) {
  proto::Envelope req;
  req.mutable_cancel()->set_target(target);
  auto reply = client.Call(req);
  if (!reply.ok()) return Fail(reply.status());
  if (json) {
    std::printf("%s\n", Json{{"target", target}, {"cancelled", reply->cancel_reply().cancelled()}}.dump().c_str());
  } else {
    std::printf("cancelled %u job(s) of %s\n", reply->cancel_reply().cancelled(), target.c_str());
  }
  return kExitOk;
}

int Compare(CoordinatorClient& client, const std::vector<std::string>& run_ids, bool json) {
  proto::Envelope req;
  for (const auto& id : run_ids) req.mutable_compare()->add_run_ids(id);
  auto st = CallJson(client, req);
  if (!st.ok()) return Fail(st.status());
  if (json) {
    std::printf("%s\n", st->dump().c_str());
    return kExitOk;
  }
  const Json& runs = (*st)["runs"];
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> head = {"", "PARAM"};
  for (const auto& r : runs) head.push_back(r["id"]);
  rows.push_back(head);
  std::vector<std::string> state = {"run", "state"};
  for (const auto& r : runs) state.push_back(r["state"]);
  rows.push_back(state);
  for (const auto& d : (*st)["differing_params"]) {
    std::vector<std::string> row = {d["job"], d["key"]};
    for (const auto& v : d["values"]) row.push_back(v.is_null() ? "-" : ValueText(v));
    rows.push_back(row);
  }
  // Metrics of every job that reported any, one row per (job, key).
  std::map<std::pair<std::string, std::string>, std::vector<std::string>> metrics;
  for (size_t i = 0; i < runs.size(); ++i) {
    for (auto& [job, j] : runs[i]["jobs"].items()) {
      for (auto& [k, v] : j["metrics"].items()) {
        auto& slot = metrics[{job, k}];
        slot.resize(runs.size(), "-");
        slot[i] = Num(v);
      }
    }
  }
  for (auto& [key, vals] : metrics) {
    vals.resize(runs.size(), "-");
    std::vector<std::string> row = {key.first, key.second};
    row.insert(row.end(), vals.begin(), vals.end());
    rows.push_back(row);
  }
  PrintTable(rows);
  return kExitOk;
}

}  // namespace dd2
