// CoordinatorService, job memoization (DESIGN.md, Jobs): identities, reuse of an identical
// job's verified outputs, waiting for an identical job still in progress, and the inputs map a
// job's Assign carries. Declared in coordinator_service.h.
#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/job_outputs.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/job_identity.h"
#include "coordinator/staged.h"

namespace dd2 {

using Json = nlohmann::json;

void CoordinatorService::AssignIdentities(Staged& s, const std::string& run_id,
                                          const std::vector<std::string>& extra) {
  std::vector<IdentityInput> inputs;
  std::vector<std::string> ids = state_.jobs_by_run[run_id];
  ids.insert(ids.end(), extra.begin(), extra.end());
  for (const auto& id : ids) {
    const JobRecord& j = s.Job(id);
    IdentityInput in{j.name, j.type, j.params_json, j.workers, {}};
    Json after = Json::parse(j.after_json, nullptr, false);
    if (after.is_array()) {
      for (const auto& a : after) {
        if (a.is_string()) in.after.push_back(a.get<std::string>());
      }
    }
    inputs.push_back(std::move(in));
  }
  for (const auto& [name, identity] : JobIdentities(inputs)) {
    JobRecord& j = s.Job(absl::StrCat(run_id, "/", name));
    if (j.identity.empty() && !identity.empty()) j.identity = identity;
  }
}

// Jobs with `identity`, committed or staged, other than `except`.
std::vector<std::string> CoordinatorService::JobsWithIdentity(Staged& s, const std::string& identity,
                                                              const std::string& except) {
  std::set<std::string> ids;
  if (auto it = state_.jobs_by_identity.find(identity); it != state_.jobs_by_identity.end()) ids = it->second;
  for (const auto& [id, j] : s.jobs) {
    if (j.identity == identity) ids.insert(id);
  }
  ids.erase(except);
  return {ids.begin(), ids.end()};
}

void CoordinatorService::MakeReady(Staged& s, const std::string& job_id) {
  JobRecord& job = s.Job(job_id);
  const int64_t now = clock_->NowMs();
  job.updated_ms = now;
  job.reused_from.clear();
  job.state = state::kReady;
  if (job.identity.empty() || state_.no_reuse_runs.count(job.run_id)) return;
  // A succeeded job that ran itself, with outputs that still verify: reuse it.
  std::string wait_for;
  for (const auto& other_id : JobsWithIdentity(s, job.identity, job_id)) {
    const JobRecord& other = s.Job(other_id);
    if (other.run_id == job.run_id) continue;  // a run's own jobs all run, even identical ones
    if (other.state == state::kSucceeded && other.reused_from.empty()) {
      absl::Status verified = other.outputs_path.empty()
                                  ? absl::NotFoundError("it recorded no outputs manifest")
                                  : VerifyOutputs(other.outputs_path, other.outputs_sha256);
      if (!verified.ok()) {
        Event(s, "reuse_rejected", job.run_id, job_id, "",
              absl::StrCat("identical job ", other_id, " not reused: ", verified.message()));
        continue;
      }
      JobRecord& j = s.Job(job_id);  // the reference may move as other records are staged
      j.state = state::kSucceeded;
      j.reused_from = other_id;
      j.failure.clear();
      Event(s, "job_reused", j.run_id, job_id, "", absl::StrCat("outputs of ", other_id));
      PromoteDependents(s, job_id);
      return;
    }
    const bool in_progress = other.state == state::kReady || other.state == state::kAssigned ||
                             other.state == state::kRunning || other.state == state::kRetrying;
    if (in_progress && wait_for.empty()) wait_for = other_id;
  }
  if (!wait_for.empty()) {
    JobRecord& j = s.Job(job_id);
    j.state = state::kWaiting;
    j.reused_from = wait_for;
    Event(s, "job_waiting", j.run_id, job_id, "", absl::StrCat("for identical job ", wait_for));
  }
}

void CoordinatorService::SettleWaiters(Staged& s) {
  // A job that ended releases the jobs waiting for it: they reuse it, wait for another
  // identical job, or run themselves. Releasing may end more jobs; repeat until nothing moves.
  std::set<std::string> settled;
  for (bool moved = true; moved;) {
    moved = false;
    std::vector<std::string> ended;
    for (const auto& [id, j] : s.jobs) {
      if (!IsTerminal(j.state) || j.identity.empty() || settled.count(id)) continue;
      auto old = state_.jobs.find(id);
      if (old != state_.jobs.end() && IsTerminal(old->second.state)) continue;
      ended.push_back(id);
    }
    for (const auto& id : ended) {
      settled.insert(id);
      for (const auto& w : JobsWithIdentity(s, s.Job(id).identity, id)) {
        JobRecord& waiter = s.Job(w);
        if (waiter.state != state::kWaiting || waiter.reused_from != id) continue;
        MakeReady(s, w);
        FinishRunIfDone(s, waiter.run_id);
        moved = true;
      }
    }
  }
}

std::map<std::string, std::string> CoordinatorService::InputsOf(const JobRecord& job) const {
  std::map<std::string, std::string> out;
  // Job ids are "<run>/<name>": the run's jobs are one range of the map, walked without lookups.
  const std::string prefix = job.run_id + "/";
  for (auto it = state_.jobs.lower_bound(prefix); it != state_.jobs.end() && it->first.compare(0, prefix.size(), prefix) == 0;
       ++it) {
    const JobRecord& j = it->second;
    if (j.state != state::kSucceeded || j.reused_from.empty()) continue;
    auto src = state_.jobs.find(j.reused_from);
    if (src != state_.jobs.end()) out[j.name] = absl::StrCat(src->second.run_id, "/", src->second.name);
  }
  return out;
}

std::string CoordinatorService::Executor(const std::string& job_id) const {
  auto it = state_.jobs.find(job_id);
  if (it == state_.jobs.end() || it->second.state != state::kSucceeded || it->second.reused_from.empty()) return job_id;
  return it->second.reused_from;
}

}  // namespace dd2
