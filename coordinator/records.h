// Plain records of the coordinator's durable state (one per SQLite row) and the state names
// stored with them. A StoreTx is one atomic batch of row writes. Value types; thread-compatible.
#ifndef DD2_COORDINATOR_RECORDS_H_
#define DD2_COORDINATOR_RECORDS_H_

#include <cstdint>
#include <string>
#include <vector>

namespace dd2 {

// Run states: running -> succeeded | failed | cancelled.
// Job states: pending (waits for `after`) -> ready -> assigned -> running -> succeeded | failed |
//   cancelled; a failed attempt with budget left moves the job to retrying (backoff), then ready.
// Attempt states: assigned -> running -> succeeded | failed | cancelled | lost | preempted.
namespace state {
inline constexpr char kPending[] = "pending";
inline constexpr char kReady[] = "ready";
inline constexpr char kAssigned[] = "assigned";
inline constexpr char kRunning[] = "running";
inline constexpr char kRetrying[] = "retrying";
inline constexpr char kSucceeded[] = "succeeded";
inline constexpr char kFailed[] = "failed";
inline constexpr char kCancelled[] = "cancelled";
inline constexpr char kLost[] = "lost";
inline constexpr char kPreempted[] = "preempted";  // attempt stopped by preemption; not a failure
// Job waits for an identical job (same identity) of another run to finish, to reuse its outputs.
inline constexpr char kWaiting[] = "waiting";
// Job and run stopped by a sweep's successive halving: not cancelled by a user, not failed.
inline constexpr char kStopped[] = "stopped";
// Checkpoint states: committed -> deleting (journaled, file about to go) -> deleted.
inline constexpr char kCommitted[] = "committed";
inline constexpr char kDeleting[] = "deleting";
inline constexpr char kDeleted[] = "deleted";
// Worker states.
inline constexpr char kAlive[] = "alive";
inline constexpr char kSuspect[] = "suspect";
}  // namespace state

bool IsTerminal(const std::string& state);

struct RunRecord {
  std::string id;
  std::string submission_id;
  std::string name;
  std::string spec;  // serialized proto::RunSpec
  std::string state;
  int64_t priority = 0;
  int64_t seq = 0;
  int64_t created_ms = 0;
  int64_t finished_ms = 0;
  bool operator==(const RunRecord&) const = default;
};

struct JobRecord {
  std::string id;
  std::string run_id;
  std::string name;
  std::string type;
  std::string params_json;
  std::string after_json;
  int64_t workers = 1;
  std::string device;
  int64_t retries = 0;
  int64_t priority = 0;
  std::string state;
  int64_t attempts = 0;
  int64_t not_before_ms = 0;
  int64_t step = 0;
  int64_t total = 0;
  std::string failure;
  int64_t updated_ms = 0;
  std::string identity;        // job memoization key ("" for none)
  std::string reused_from;     // succeeded: the job whose outputs it reuses; waiting: the job it waits for
  std::string outputs_path;    // succeeded (ran itself): its outputs manifest
  std::string outputs_sha256;  // and that file's sha256
  bool operator==(const JobRecord&) const = default;
};

struct AttemptRecord {
  std::string id;
  std::string job_id;
  int64_t number = 0;
  std::string state;
  std::string worker_ids;  // comma-separated
  int64_t started_ms = 0;
  int64_t finished_ms = 0;
  int64_t exit_code = 0;
  int64_t signal = 0;
  std::string cause;
  bool operator==(const AttemptRecord&) const = default;
};

struct WorkerRecord {
  std::string id;
  std::string host;
  std::string device;
  int64_t device_index = 0;
  int64_t slots = 1;
  int64_t pid = 0;
  std::string state;
  int64_t registered_ms = 0;
  int64_t last_seen_ms = 0;
  // Inside a SLURM allocation (from Hello): its job id ("" = not under SLURM), the task's rank,
  // node-local rank, restart count and node.
  std::string slurm_job_id;
  int64_t slurm_procid = -1;
  int64_t slurm_localid = -1;
  int64_t slurm_restart_count = -1;
  std::string slurm_node;
  bool operator==(const WorkerRecord&) const = default;
};

// One sbatch submission of workers (dd2ctl slurm launch, or the autoscaler), keyed by id.
struct SlurmAllocationRecord {
  std::string id;             // "alloc-<seq>"
  int64_t seq = 0;
  std::string origin;         // "launch" or "autoscale"
  std::string slurm_job_id;   // "" while an autoscaler submission has not been answered
  int64_t nodes = 1;
  int64_t workers_per_node = 1;
  std::string device;
  std::string partition;
  std::string time_limit;
  std::string account;
  std::string script;
  std::string state;          // "submitting", "sbatch failed", SLURM's job state, or "ended"
  std::string reason;
  int64_t restarts = 0;
  int64_t created_ms = 0;
  int64_t updated_ms = 0;
  bool operator==(const SlurmAllocationRecord&) const = default;
};

// One committed checkpoint of a job, keyed by (job_id, step).
struct CheckpointRecord {
  std::string run_id;
  std::string job_id;
  std::string attempt_id;
  int64_t step = 0;
  std::string path;
  std::string sha256;
  int64_t bytes = 0;
  std::string state;
  int64_t created_ms = 0;
  std::string metrics_json = "{}";  // {"key": value}: reported with it, and by evals of it
  bool operator==(const CheckpointRecord&) const = default;
};

struct EventRecord {
  int64_t id = 0;  // assigned by the store
  int64_t ts_ms = 0;
  std::string run_id;
  std::string job_id;
  std::string attempt_id;
  std::string kind;
  std::string detail;
  bool operator==(const EventRecord&) const = default;
};

struct MetricRecord {
  std::string run_id;
  std::string job_id;
  std::string key;
  int64_t step = 0;
  double value = 0;
  int64_t ts_ms = 0;
  bool operator==(const MetricRecord&) const = default;
};

struct SweepRecord {
  std::string id;
  std::string submission_id;
  std::string name;
  std::string spec;  // serialized proto::SweepSpec without points
  int64_t seq = 0;
  int64_t created_ms = 0;
  bool operator==(const SweepRecord&) const = default;
};

// A point of a sweep, keyed by (sweep_id, identity).
struct SweepPointRecord {
  std::string sweep_id;
  std::string identity;
  int64_t number = 0;
  std::string values_json;
  std::string run_id;
  bool operator==(const SweepPointRecord&) const = default;
};

// One point's outcome at one rung of successive halving, keyed by (sweep_id, rung, identity).
struct HalvingDecisionRecord {
  std::string sweep_id;
  int64_t rung = 0;
  std::string identity;
  bool has_value = false;
  double value = 0;
  bool kept = false;
  int64_t ts_ms = 0;
  bool operator==(const HalvingDecisionRecord&) const = default;
};

// One atomic batch: rows are upserted by primary key; events and metrics are appended
// (a metric with an existing (job, key, step) replaces it).
struct StoreTx {
  std::vector<RunRecord> runs;
  std::vector<JobRecord> jobs;
  std::vector<AttemptRecord> attempts;
  std::vector<WorkerRecord> workers;
  std::vector<CheckpointRecord> checkpoints;
  std::vector<EventRecord> events;
  std::vector<MetricRecord> metrics;
  std::vector<SweepRecord> sweeps;          // inserted once, never changed
  std::vector<SweepPointRecord> points;     // inserted once, never changed
  std::vector<HalvingDecisionRecord> decisions;  // inserted once, never changed
  std::vector<SlurmAllocationRecord> allocations;
  bool empty() const {
    return runs.empty() && jobs.empty() && attempts.empty() && workers.empty() && checkpoints.empty() &&
           events.empty() && metrics.empty() && sweeps.empty() && points.empty() && decisions.empty() &&
           allocations.empty();
  }
};

// Everything the coordinator reloads at start-up.
struct StoreSnapshot {
  std::vector<RunRecord> runs;
  std::vector<JobRecord> jobs;
  std::vector<AttemptRecord> attempts;
  std::vector<WorkerRecord> workers;
  std::vector<CheckpointRecord> checkpoints;  // ordered by (job_id, step)
  std::vector<SweepRecord> sweeps;
  std::vector<SweepPointRecord> points;       // ordered by (sweep_id, number)
  std::vector<HalvingDecisionRecord> decisions;  // ordered by (sweep_id, rung, identity)
  std::vector<SlurmAllocationRecord> allocations;  // ordered by seq
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_RECORDS_H_
