// The coordinator's read-only documents, built from its committed state in one place: status
// (every run, or one), a run's jobs with their attempts, checkpoints, workers, SLURM allocations,
// sweeps, a sweep's points, and a comparison of runs. dd2ctl --json prints them as they are (the shapes are
// documented in schemas/PROTOCOL.md); the HTTP API will serve the same documents. Pure functions
// of the state; call them from the thread that owns it.
#ifndef DD2_COORDINATOR_VIEWS_H_
#define DD2_COORDINATOR_VIEWS_H_

#include <string>
#include <vector>

#include <functional>

#include <nlohmann/json.hpp>

#include "absl/status/statusor.h"
#include "coordinator/state.h"

namespace dd2 {

// The coordinator's own counters for the status document.
struct CoordinatorInfo {
  std::string endpoint;
  int64_t uptime_ms = 0;
  int64_t frames = 0;
  int64_t malformed_frames = 0;
  int64_t send_failures = 0;
  int64_t rejected_frames = 0;       // messages a peer's role may not send, or from a revoked key
  int64_t rejected_connections = 0;  // CURVE handshakes with a key that is not authorized
  int64_t refused_paths = 0;         // checkpoint/outputs paths outside their job's folder
  int64_t store_errors = 0;          // SQLite transactions that failed; nothing of them applied
  bool keyed = false;                // peers authenticate with CURVE keys
};

// Every run (run_id empty) with the coordinator's counters, or one run; NotFound for an unknown run.
// `brief`: the list of runs without each run's "jobs" (what a runs table needs: its counts and
// progress are kept), so its size does not grow with the jobs.
absl::StatusOr<nlohmann::json> StatusDocument(const CoordinatorState& s, const std::string& run_id,
                                              const CoordinatorInfo& info, bool brief = false);
absl::StatusOr<nlohmann::json> JobsDocument(const CoordinatorState& s, const std::string& run_id);
absl::StatusOr<nlohmann::json> CheckpointsDocument(const CoordinatorState& s, const std::string& run_id);
nlohmann::json WorkersDocument(const CoordinatorState& s, int64_t now_ms);
// The SLURM side of the coordinator, for SlurmDocument.
struct SlurmInfo {
  bool autoscale = false;
  int64_t backoff_until_ms = 0;
  int64_t sbatch_failures = 0;       // consecutive
  std::string last_decision;         // the autoscaler's latest reason, acted on or not
  int64_t last_poll_ms = 0;
  std::string poll_error;            // why the latest scontrol call failed ("" = it worked)
};
// Every SLURM allocation with its state and the workers that registered from it.
nlohmann::json SlurmDocument(const CoordinatorState& s, const SlurmInfo& info);
// Every sweep (sweep_id empty) in brief, or one sweep point by point with the grouped view.
absl::StatusOr<nlohmann::json> SweepsDocument(const CoordinatorState& s, const std::string& sweep_id);
// A run's metric series, every job's (job_name empty) or one job's: {"run", "metrics": [{"job",
// "key", "step", "value"}]}. `series` reads one job's rows from the store.
absl::StatusOr<nlohmann::json> MetricsDocument(
    const CoordinatorState& s, const std::string& run_id, const std::string& job_name,
    const std::function<absl::StatusOr<std::vector<MetricRecord>>(const std::string& job_id)>& series);
// The runs side by side: their jobs' states and latest metrics, and the params that differ.
absl::StatusOr<nlohmann::json> CompareDocument(const CoordinatorState& s, const std::vector<std::string>& run_ids);

}  // namespace dd2

#endif  // DD2_COORDINATOR_VIEWS_H_
