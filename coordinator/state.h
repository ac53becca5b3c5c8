// CoordinatorState: the coordinator's committed state in memory (the JobStore's rows, folded)
// and the indexes built over it. CoordinatorService owns it and changes it only by folding a
// committed transaction; views.h builds the read-only documents from it.
// Not thread-safe: owned by the coordinator loop thread.
#ifndef DD2_COORDINATOR_STATE_H_
#define DD2_COORDINATOR_STATE_H_

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "coordinator/records.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

struct WorkerLive {
  std::string peer;       // empty until the worker says Hello to this process
  int64_t last_seen_ms = 0;
  bool operator==(const WorkerLive&) const = default;
};

struct CoordinatorState {
  std::map<std::string, RunRecord> runs;
  std::map<std::string, JobRecord> jobs;
  std::map<std::string, AttemptRecord> attempts;
  std::map<std::string, WorkerRecord> workers;
  std::map<std::string, WorkerLive> live;
  std::map<std::string, std::string> run_by_submission;
  std::map<std::string, std::vector<std::string>> jobs_by_run;       // in spec order
  std::map<std::string, std::vector<std::string>> attempts_by_job;   // in number order
  std::map<std::string, int64_t> job_index;                          // position in its run
  std::map<std::string, std::vector<std::string>> dependents;        // job -> jobs waiting on it
  std::map<std::string, int64_t> open_jobs;                          // run -> non-terminal jobs
  std::set<std::string> ready;                                       // jobs in state ready
  std::set<std::string> active_attempts;                             // non-terminal
  std::map<std::string, int64_t> used_slots;  // worker -> ranks of active attempts it holds (no zeros)
  std::map<std::string, std::map<std::string, double>> latest_metrics;  // job -> key -> value
  std::map<std::string, std::set<std::string>> finished_ranks;      // attempt -> workers done
  std::map<std::string, std::map<int64_t, CheckpointRecord>> checkpoints;  // job -> step -> record
  std::map<std::string, proto::JobSpec> job_specs;                  // job -> its spec
  // Memoization: identity -> jobs with it; runs submitted with --no-reuse.
  std::map<std::string, std::set<std::string>> jobs_by_identity;
  std::set<std::string> no_reuse_runs;
  // Sweeps.
  std::map<std::string, SweepRecord> sweeps;
  std::map<std::string, proto::SweepSpec> sweep_specs;                // sweep -> spec without points
  std::map<std::string, std::string> sweep_by_submission;
  std::map<std::string, std::vector<SweepPointRecord>> points;        // sweep -> points by number
  std::map<std::string, std::string> sweep_of_run;                    // point run -> sweep
  std::map<std::string, std::map<int64_t, std::vector<HalvingDecisionRecord>>> decisions;  // sweep -> rung
  // SLURM allocations by id.
  std::map<std::string, SlurmAllocationRecord> allocations;

  // Non-terminal attempts that `worker_id` holds a rank of.
  std::vector<std::string> ActiveAttemptsOf(const std::string& worker_id) const;
  // The same for every worker that holds one, in one pass over the active attempts.
  std::map<std::string, std::vector<std::string>> ActiveAttemptsByWorker() const;
  // Puts attempt record `r` in `attempts`, keeping active_attempts and used_slots (one slot per
  // rank of a non-terminal attempt) in step with it.
  void PutAttempt(const AttemptRecord& r);
  // The slots in use on `worker_id`.
  int64_t UsedSlots(const std::string& worker_id) const;
};

// Whether `worker_id` holds a rank of `a`.
bool Holds(const AttemptRecord& a, const std::string& worker_id);

}  // namespace dd2

#endif  // DD2_COORDINATOR_STATE_H_
