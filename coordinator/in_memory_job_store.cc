// InMemoryJobStore: maps keyed like the SQLite tables. Apply validates first, then writes, so a
// rejected batch changes nothing.
#include <algorithm>
#include <map>
#include <set>
#include <tuple>

#include "absl/strings/str_cat.h"
#include "coordinator/job_store.h"

namespace dd2 {
namespace {

class InMemoryJobStore : public JobStore {
 public:
  absl::Status Apply(const StoreTx& tx) override {
    std::map<std::string, std::string> submissions;  // submission id -> run id, after this tx
    for (const auto& [id, run] : runs_) submissions[run.submission_id] = id;
    for (const auto& run : tx.runs) {
      auto it = submissions.find(run.submission_id);
      if (it != submissions.end() && it->second != run.id) {
        return absl::AlreadyExistsError(
            absl::StrCat("submission id '", run.submission_id, "' belongs to run ", it->second));
      }
      submissions[run.submission_id] = run.id;
    }
    std::set<std::string> sweep_submissions;
    for (const auto& [id, w] : sweeps_) sweep_submissions.insert(w.submission_id);
    for (const auto& w : tx.sweeps) {
      if (!sweep_submissions.insert(w.submission_id).second) {
        return absl::AlreadyExistsError(
            absl::StrCat("submission id '", w.submission_id, "' already belongs to another sweep"));
      }
    }
    for (const auto& r : tx.runs) runs_[r.id] = r;
    for (const auto& w : tx.sweeps) sweeps_[w.id] = w;
    for (const auto& p : tx.points) points_[{p.sweep_id, p.identity}] = p;
    for (const auto& d : tx.decisions) decisions_[{d.sweep_id, d.rung, d.identity}] = d;
    for (const auto& r : tx.jobs) jobs_[r.id] = r;
    for (const auto& r : tx.attempts) attempts_[r.id] = r;
    for (const auto& r : tx.workers) workers_[r.id] = r;
    for (const auto& a : tx.allocations) {
      auto [it, inserted] = allocations_.try_emplace(a.id, a);
      if (!inserted) {  // like SQLite's upsert: what was asked stays
        SlurmAllocationRecord updated = it->second;
        updated.slurm_job_id = a.slurm_job_id;
        updated.state = a.state;
        updated.reason = a.reason;
        updated.restarts = a.restarts;
        updated.updated_ms = a.updated_ms;
        it->second = updated;
      }
    }
    for (const auto& c : tx.checkpoints) {
      auto [it, inserted] = checkpoints_.try_emplace({c.job_id, c.step}, c);
      if (!inserted) {  // like SQLite's upsert: run_id and created_ms stay
        CheckpointRecord updated = c;
        updated.run_id = it->second.run_id;
        updated.created_ms = it->second.created_ms;
        it->second = updated;
      }
    }
    for (auto e : tx.events) {
      e.id = static_cast<int64_t>(events_.size()) + 1;
      events_.push_back(std::move(e));
    }
    for (const auto& m : tx.metrics) metrics_[{m.job_id, m.key, m.step}] = m;
    return absl::OkStatus();
  }

  absl::StatusOr<StoreSnapshot> Load() override {
    StoreSnapshot s;
    for (const auto& [id, r] : runs_) s.runs.push_back(r);
    for (const auto& [id, r] : jobs_) s.jobs.push_back(r);
    for (const auto& [id, r] : attempts_) s.attempts.push_back(r);
    for (const auto& [id, r] : workers_) s.workers.push_back(r);
    for (const auto& [key, c] : checkpoints_) s.checkpoints.push_back(c);
    for (const auto& [id, w] : sweeps_) s.sweeps.push_back(w);
    for (const auto& [key, p] : points_) s.points.push_back(p);
    std::sort(s.points.begin(), s.points.end(), [](const SweepPointRecord& a, const SweepPointRecord& b) {
      return std::tie(a.sweep_id, a.number) < std::tie(b.sweep_id, b.number);
    });
    for (const auto& [key, d] : decisions_) s.decisions.push_back(d);
    for (const auto& [id, a] : allocations_) s.allocations.push_back(a);
    std::sort(s.allocations.begin(), s.allocations.end(),
              [](const SlurmAllocationRecord& a, const SlurmAllocationRecord& b) { return a.seq < b.seq; });
    return s;
  }

  absl::StatusOr<std::vector<EventRecord>> Events(const EventFilter& f) override {
    std::vector<EventRecord> out;
    for (const auto& e : events_) {
      if (!f.run_id.empty() && e.run_id != f.run_id) continue;
      if (!f.job_id.empty() && e.job_id != f.job_id) continue;
      if (!f.kind.empty() && e.kind != f.kind) continue;
      out.push_back(e);
    }
    return out;
  }

  absl::StatusOr<std::vector<MetricRecord>> Metrics(const std::string& job_id) override {
    std::vector<MetricRecord> out;
    for (const auto& [key, m] : metrics_) {
      if (m.job_id == job_id) out.push_back(m);
    }
    return out;
  }

  absl::StatusOr<std::vector<MetricRecord>> LatestMetrics() override {
    std::map<std::pair<std::string, std::string>, MetricRecord> latest;  // keys sort by step last
    for (const auto& [key, m] : metrics_) latest[{m.job_id, m.key}] = m;
    std::vector<MetricRecord> out;
    for (const auto& [key, m] : latest) out.push_back(m);
    return out;
  }

 private:
  std::map<std::string, RunRecord> runs_;
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, AttemptRecord> attempts_;
  std::map<std::string, WorkerRecord> workers_;
  std::map<std::string, SlurmAllocationRecord> allocations_;
  std::map<std::pair<std::string, int64_t>, CheckpointRecord> checkpoints_;
  std::vector<EventRecord> events_;
  std::map<std::string, SweepRecord> sweeps_;
  std::map<std::pair<std::string, std::string>, SweepPointRecord> points_;
  std::map<std::tuple<std::string, int64_t, std::string>, HalvingDecisionRecord> decisions_;
  std::map<std::tuple<std::string, std::string, int64_t>, MetricRecord> metrics_;
};

}  // namespace

std::unique_ptr<JobStore> NewInMemoryJobStore() { return std::make_unique<InMemoryJobStore>(); }

}  // namespace dd2
