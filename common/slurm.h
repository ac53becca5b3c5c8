// SLURM as dd2 uses it. The sbatch script that starts one dd2-worker per GPU
// (cluster/slurm/dd2-workers.sbatch, rendered here), the four commands dd2 runs (sbatch, scontrol,
// scancel) behind one small interface (SlurmCommands: real, or a fake in unit tests), and the pure
// parts: parsing SLURM's answers, a worker's task environment, and the cause of an attempt that
// SLURM ended. Used by dd2ctl (launch, ls, cancel), the coordinator (autoscaling, allocation
// states) and dd2-worker (--slurm). Thread-compatible.
#ifndef DD2_COMMON_SLURM_H_
#define DD2_COMMON_SLURM_H_

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

// What one sbatch submission asks for.
struct SlurmLaunchSpec {
  int nodes = 1;
  int workers_per_node = 1;       // GPUs per node: one worker (srun task) each
  std::string device = "cuda";    // "cuda" (asks for --gpus-per-node) or "cpu"
  std::string partition;          // "" = the cluster's default
  std::string time_limit;         // sbatch --time ("" = the partition's)
  std::string account;
  std::vector<std::string> sbatch_args;  // more sbatch options, one "#SBATCH" line each
  std::string coordinator;        // endpoint the workers connect to
  std::string home;               // the shared storage root (dd2 home): artifacts, worker logs
  std::string worker_binary;      // absolute path of dd2-worker on the compute nodes
  int grace_s = 120;              // USR1 this many seconds before the time limit
  int threads = 0;                // intra-op threads per job (0: LibTorch's default)
  int idle_exit_s = 0;            // a worker idle this long exits (0: never)
  std::string job_name = "dd2-workers";
};

// InvalidArgument naming the option when a value is out of range or could break the script
// (a newline, a quote).
absl::Status ValidateLaunchSpec(const SlurmLaunchSpec& spec);
// The sbatch script for `spec` (validate first).
std::string RenderSbatchScript(const SlurmLaunchSpec& spec);

// One job as `scontrol show job -o` describes it.
struct SlurmJobInfo {
  std::string name;        // JobName
  std::string state;       // JobState: PENDING, RUNNING, COMPLETING, CANCELLED, TIMEOUT, ...
  std::string reason;      // Reason: None, TimeLimit, Priority, ...
  int restarts = 0;        // Restarts: requeues so far
  int64_t run_time_s = 0;
  int64_t time_limit_s = -1;  // -1: UNLIMITED
  bool operator==(const SlurmJobInfo&) const = default;
};

// Parses `scontrol show job -o` output (one job per line) into job id -> info. Lines it cannot
// read are skipped.
std::map<std::string, SlurmJobInfo> ParseScontrolJobs(const std::string& text);
// SLURM durations: "MM", "MM:SS", "HH:MM:SS", "D-HH", "D-HH:MM", "D-HH:MM:SS"; -1 for
// UNLIMITED / INFINITE; nullopt when unreadable.
std::optional<int64_t> ParseSlurmDuration(const std::string& text);
// Whether an sbatch failure is worth retrying (socket timeouts, "Resource temporarily
// unavailable", slurmctld busy or unreachable).
bool IsTransientSbatchError(const std::string& message);
// Whether a job state is final (the allocation holds nothing any more).
bool IsFinalSlurmState(const std::string& state);

class SlurmCommands {
 public:
  virtual ~SlurmCommands() = default;
  // sbatch --parsable with `script` on stdin: the job id, or an error carrying sbatch's words.
  virtual absl::StatusOr<std::string> Submit(const std::string& script) = 0;
  // Every job SLURM still knows (scontrol show job -o), by id; with `job_id`, only that one
  // (an error when SLURM does not know it).
  virtual absl::StatusOr<std::map<std::string, SlurmJobInfo>> Query(const std::string& job_id) = 0;
  // The final state of a job SLURM's controller has forgotten, from accounting (sacct):
  // "COMPLETED", "CANCELLED", ...; NotFound where accounting does not run or knows nothing.
  virtual absl::StatusOr<std::string> FinalState(const std::string& job_id) = 0;
  // scancel ID.
  virtual absl::Status Cancel(const std::string& job_id) = 0;
};

// The real commands, found on PATH; each call waits at most `timeout_ms`.
std::unique_ptr<SlurmCommands> NewShellSlurmCommands(int64_t timeout_ms = 30000);

// Submit with up to `attempts` tries, retrying only transient errors, after `backoff_ms`,
// doubling each time; `sleep_ms` waits (injected for tests). `on_retry` hears each retried error.
absl::StatusOr<std::string> SubmitWithRetry(SlurmCommands& slurm, const std::string& script, int attempts,
                                            int64_t backoff_ms, const std::function<void(int64_t)>& sleep_ms,
                                            const std::function<void(const std::string&)>& on_retry = {});

// ---- worker side ----

// The task's SLURM environment (job id "" when not inside an allocation).
proto::SlurmTask SlurmTaskFromEnv(const std::function<const char*(const char*)>& getenv);
// The CUDA device index a task uses: 0 when SLURM left it exactly one visible GPU
// (CUDA_VISIBLE_DEVICES, one entry), else its SLURM_LOCALID.
int SlurmDeviceIndex(const proto::SlurmTask& task, const char* cuda_visible_devices);

// Why SLURM is ending a worker's attempts. `preempted`: the job checkpointed and uses no retry
// (preemption, requeue, time limit); otherwise the attempt is lost, on the lost_retries budget
// (scancel, node failure).
struct SlurmEnding {
  std::string cause;   // "slurm preempted", "slurm timeout", "slurm cancelled", "slurm node fail"
  bool preempted = false;
};
// From the allocation's state when the signal came (nullopt: scontrol did not answer), the
// restart count the worker started with, and whether the signal was the USR1 grace signal
// (then: time limit when the job is within `grace_s` (+ slack) of it, else preemption).
SlurmEnding ClassifySlurmEnding(const std::optional<SlurmJobInfo>& info, int start_restarts, bool grace_signal,
                                int64_t grace_s);

}  // namespace dd2

#endif  // DD2_COMMON_SLURM_H_
