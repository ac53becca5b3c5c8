// CoordinatorService::Staged: one transition's copies of the records it changes, read through
// to the committed state, plus the rows it appends and the messages to send once it is
// committed (CoordinatorService::Commit). Internal to the coordinator's service files.
// Not thread-safe: the coordinator loop thread only.
#ifndef DD2_COORDINATOR_STAGED_H_
#define DD2_COORDINATOR_STAGED_H_

#include <map>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/coordinator_service.h"

namespace dd2 {

// Copies of records being changed by one transition, read through to committed memory.
class CoordinatorService::Staged {
 public:
  explicit Staged(CoordinatorService* svc) : svc_(svc) {}

  RunRecord& Run(const std::string& id) { return Touch(runs, svc_->state_.runs, id); }
  JobRecord& Job(const std::string& id) { return Touch(jobs, svc_->state_.jobs, id); }
  AttemptRecord& Attempt(const std::string& id) { return Touch(attempts, svc_->state_.attempts, id); }
  WorkerRecord& Worker(const std::string& id) { return Touch(workers, svc_->state_.workers, id); }
  SlurmAllocationRecord& Allocation(const std::string& id) { return Touch(allocations, svc_->state_.allocations, id); }

  std::map<std::string, RunRecord> runs;
  std::map<std::string, JobRecord> jobs;
  std::map<std::string, AttemptRecord> attempts;
  std::map<std::string, WorkerRecord> workers;
  std::map<std::string, SlurmAllocationRecord> allocations;
  std::vector<CheckpointRecord> checkpoints;
  std::vector<EventRecord> events;
  std::vector<MetricRecord> metrics;
  std::vector<SweepRecord> sweeps;
  std::vector<SweepPointRecord> points;
  std::vector<HalvingDecisionRecord> decisions;
  // Messages to send once the transition is committed.
  std::vector<std::pair<std::string, proto::Envelope>> outbox;

 private:
  template <typename R>
  static R& Touch(std::map<std::string, R>& staged, const std::map<std::string, R>& committed,
                  const std::string& id) {
    auto it = staged.find(id);
    if (it != staged.end()) return it->second;
    auto c = committed.find(id);
    R& r = staged[id];
    if (c != committed.end()) r = c->second;
    return r;
  }
  CoordinatorService* svc_;
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_STAGED_H_
