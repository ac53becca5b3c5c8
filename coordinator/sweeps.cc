// CoordinatorService, sweeps: storing a sweep and its points (each a run), extending it with new
// points only, cancelling it, successive halving (decisions committed with the stops they
// cause), and the sweep, compare and metrics documents. Declared in coordinator_service.h.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/protocol.h"
#include "common/run_spec.h"
#include "common/status_macros.h"
#include "common/sweep.h"
#include "common/yaml_checker.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/halving.h"
#include "coordinator/staged.h"
#include "coordinator/views.h"

namespace dd2 {

using Json = nlohmann::json;

absl::Status CoordinatorService::HandleSweepSubmit(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const proto::SweepSubmitRequest& req = env.sweep_submit();
  const proto::SweepSpec& sweep = req.sweep();
  if (req.sweep_id().empty() && (req.submission_id().empty() || req.submission_id().size() > 128)) {
    return absl::InvalidArgumentError("submission_id must be 1..128 characters");
  }
  if (!ValidName(sweep.name())) return absl::InvalidArgumentError(absl::StrCat("bad sweep name '", sweep.name(), "'"));
  if (sweep.points_size() == 0) return absl::InvalidArgumentError("a sweep needs at least one point");
  if (sweep.points_size() > 1000000) return absl::InvalidArgumentError("too many points");
  for (int i = 0; i < sweep.points_size(); ++i) {  // the client is not trusted
    const proto::SweepPoint& p = sweep.points(i);
    if (absl::Status st = ValidateRunSpec(p.spec()); !st.ok()) {
      return absl::InvalidArgumentError(absl::StrCat("sweep point ", i + 1, ": ", st.message()));
    }
    if (p.identity() != PointIdentity(p.spec())) {
      return absl::InvalidArgumentError(absl::StrCat("sweep point ", i + 1, ": identity does not match its spec"));
    }
    if (!Json::accept(p.values_json())) {
      return absl::InvalidArgumentError(absl::StrCat("sweep point ", i + 1, ": values are not JSON"));
    }
  }
  Staged s(this);
  std::string sweep_id;
  if (!req.sweep_id().empty()) {
    if (!state_.sweeps.count(req.sweep_id())) return absl::NotFoundError(absl::StrCat("no sweep '", req.sweep_id(), "'"));
    sweep_id = req.sweep_id();
  } else if (auto it = state_.sweep_by_submission.find(req.submission_id()); it != state_.sweep_by_submission.end()) {
    sweep_id = it->second;
  } else {
    const int64_t seq = next_sweep_seq_;
    sweep_id = absl::StrCat(sweep.name(), "-s", seq);
    proto::SweepSpec stored = sweep;
    stored.clear_points();
    s.sweeps.push_back({sweep_id, req.submission_id(), sweep.name(), stored.SerializeAsString(), seq, clock_->NowMs()});
    Event(s, "sweep_submitted", "", "", "", absl::StrCat(sweep_id, ": ", sweep.points_size(), " points from ", sweep.source()));
  }
  std::set<std::string> known;
  int64_t number = 0;
  std::map<std::string, std::string> run_of;
  if (auto it = state_.points.find(sweep_id); it != state_.points.end()) {
    for (const auto& p : it->second) {
      known.insert(p.identity);
      run_of[p.identity] = p.run_id;
      number = std::max(number, p.number);
    }
  }
  uint32_t added = 0, existing = 0;
  std::vector<std::string> new_runs;
  int64_t seq = next_seq_;
  for (const auto& p : sweep.points()) {
    if (known.count(p.identity())) {
      ++existing;
      continue;
    }
    known.insert(p.identity());
    ++added;
    ++number;
    const std::string run_id = absl::StrCat(sweep.name(), "-p", number, "-", seq);
    StageRun(s, run_id, absl::StrCat(sweep_id, "/", p.identity()), p.spec(), seq);
    ++seq;
    s.points.push_back({sweep_id, p.identity(), number, p.values_json(), run_id});
    run_of[p.identity()] = run_id;
    new_runs.push_back(run_id);
  }
  proto::Envelope reply;
  auto* r = reply.mutable_sweep_submit_reply();
  r->set_sweep_id(sweep_id);
  r->set_added(added);
  r->set_existing(existing);
  for (const auto& p : sweep.points()) r->add_run_ids(run_of[p.identity()]);
  reply.set_request_id(env.request_id());
  reply.set_sender("coordinator");
  if (s.sweeps.empty() && s.points.empty()) {  // nothing new: nothing to write
    Reply(peer, env, reply);
    return absl::OkStatus();
  }
  if (added > 0) Event(s, "sweep_extended", "", "", "", absl::StrCat(sweep_id, ": ", added, " new points"));
  s.outbox.push_back({peer, reply});
  if (absl::Status st = Commit(s); !st.ok()) {
    for (const auto& run_id : new_runs) UnindexRun(run_id);
    return st;
  }
  next_seq_ = seq;
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleSweeps(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  DD2_ASSIGN_OR_RETURN(Json doc, SweepsDocument(state_, env.sweeps().sweep_id()));
  ReplyJson(peer, env, doc);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleCompare(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const auto& ids = env.compare().run_ids();
  DD2_ASSIGN_OR_RETURN(Json doc, CompareDocument(state_, std::vector<std::string>(ids.begin(), ids.end())));
  ReplyJson(peer, env, doc);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleMetrics(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  DD2_ASSIGN_OR_RETURN(Json doc, MetricsDocument(state_, env.metrics().run_id(), "",
                                                 [this](const std::string& job_id) { return store_->Metrics(job_id); }));
  ReplyJson(peer, env, doc);
  return absl::OkStatus();
}

void CoordinatorService::StopRun(Staged& s, const std::string& run_id, const std::string& why) {
  const int64_t now = clock_->NowMs();
  for (const auto& id : state_.jobs_by_run[run_id]) {
    JobRecord& j = s.Job(id);
    if (IsTerminal(j.state)) continue;
    j.state = state::kStopped;
    j.failure = why;
    j.updated_ms = now;
    Event(s, "job_stopped", run_id, id, "", why);
    StageCancelAttempts(s, id);
  }
  FinishRunIfDone(s, run_id);
}

void CoordinatorService::AdvanceHalving() {
  for (const auto& [sweep_id, spec] : state_.sweep_specs) {
    const proto::EarlyStop& es = spec.early_stop();
    if (es.rungs_size() == 0) continue;
    auto& decided_rows = state_.decisions[sweep_id];
    if (static_cast<int>(decided_rows.size()) >= es.rungs_size()) continue;
    HalvingPolicy policy{{es.rungs().begin(), es.rungs().end()}, es.keep(), es.mode() == "max"};
    std::vector<HalvingPoint> points;
    for (const auto& p : state_.points[sweep_id]) {
      HalvingPoint hp{p.identity, p.number, {}, IsTerminal(state_.runs[p.run_id].state)};
      const std::string job = Executor(absl::StrCat(p.run_id, "/", es.job()));
      if (auto c = state_.checkpoints.find(job); c != state_.checkpoints.end()) {
        for (int64_t rung : policy.rungs) {
          auto at = c->second.find(rung);
          if (at == c->second.end()) continue;
          Json m = Json::parse(at->second.metrics_json, nullptr, false);
          if (m.is_object() && m.contains(es.metric()) && m[es.metric()].is_number()) {
            hp.values[rung] = m[es.metric()].get<double>();
          }
        }
      }
      points.push_back(std::move(hp));
    }
    std::map<int64_t, std::vector<HalvingOutcome>> decided;
    for (const auto& [rung, rows] : decided_rows) {
      for (const auto& r : rows) {
        decided[rung].push_back({rung, r.identity, r.has_value ? std::optional<double>(r.value) : std::nullopt, r.kept});
      }
    }
    std::vector<HalvingOutcome> outcomes = DecideRungs(policy, points, decided);
    if (outcomes.empty()) continue;
    Staged s(this);
    const int64_t now = clock_->NowMs();
    std::map<std::string, std::string> run_of;
    for (const auto& p : state_.points[sweep_id]) run_of[p.identity] = p.run_id;
    std::map<int64_t, int> kept_at;
    for (const auto& o : outcomes) {
      s.decisions.push_back({sweep_id, o.rung, o.identity, o.value.has_value(), o.value.value_or(0), o.kept, now});
      kept_at[o.rung] += o.kept ? 1 : 0;
      if (!o.kept) {
        StopRun(s, run_of[o.identity],
                absl::StrCat("stopped by successive halving at step ", o.rung, " (", es.metric(), " ",
                             o.value ? absl::StrCat(*o.value) : std::string("missing"), ")"));
      }
    }
    for (const auto& [rung, kept] : kept_at) {
      Event(s, "sweep_rung_decided", "", "", "", absl::StrCat(sweep_id, ": step ", rung, ", ", kept, " points kept"));
    }
    Commit(s).IgnoreError();  // decided again at the next tick if the write failed
  }
}

}  // namespace dd2
