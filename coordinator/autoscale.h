// SLURM autoscaling (dd2-coordinator --slurm-autoscale FILE): its settings, read from YAML with
// located errors, and the policy, a pure function like the scheduler. When ready jobs have
// waited longer than `wait_s` and neither the free live workers nor the workers still to come
// from pending allocations could take them, it asks for one allocation sized to the waiting
// gangs, within max_allocations and max_workers, and not while sbatch is backing off. Workers
// end their own allocations: each exits after idle_timeout_s without work. The coordinator
// carries the decisions out (coordinator/slurm_service.cc). Pure; thread-safe.
#ifndef DD2_COORDINATOR_AUTOSCALE_H_
#define DD2_COORDINATOR_AUTOSCALE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace dd2 {

struct AutoscaleConfig {
  std::string partition;             // "" = the cluster's default partition
  int64_t gpus_per_node = 1;         // workers per node (one per GPU)
  std::string device = "cuda";       // "cuda", or "cpu" (workers run --device cpu; no GPUs asked)
  std::string time_limit;            // sbatch --time; "" = the partition's
  std::string account;
  std::vector<std::string> sbatch_args;  // more sbatch options
  int64_t max_allocations = 4;       // unfinished allocations at once
  int64_t max_workers = 16;          // workers of unfinished allocations, together
  int64_t wait_s = 30;               // how long ready jobs wait before it acts
  int64_t idle_timeout_s = 300;      // workers idle this long exit (their allocation ends)
  int64_t sbatch_backoff_s = 30;     // after a failed sbatch; doubles per failure
  int64_t sbatch_backoff_max_s = 600;
  int64_t grace_s = 120;             // USR1 this long before the time limit
  int64_t threads = 0;               // intra-op threads per job (0: LibTorch's default)
  int64_t poll_s = 5;                // how often SLURM's job states are read
  std::string worker;                // dd2-worker on the nodes; "" = beside dd2-coordinator
  std::string home;                  // shared storage root; "" = the coordinator's home
};

// Reads FILE: unknown keys, wrong types and out-of-range values are InvalidArgument naming
// FILE:LINE:COLUMN and the key.
absl::StatusOr<AutoscaleConfig> LoadAutoscaleConfig(const std::string& path);

// A ready job as the policy sees it.
struct WaitingJob {
  std::string id;
  int64_t workers = 1;          // gang size
  std::string device;           // "cpu", "cuda" or "any"
  int64_t ready_since_ms = 0;
};

struct AutoscaleView {
  int64_t now_ms = 0;
  std::vector<WaitingJob> ready;
  int64_t free_workers = 0;          // live, not draining, with a free slot, of the config's device
  int64_t coming_workers = 0;        // asked for in unfinished allocations, not registered yet
  int64_t allocation_workers = 0;    // workers of unfinished allocations (registered or not)
  int64_t unfinished_allocations = 0;
  int64_t backoff_until_ms = 0;      // sbatch failed: not before this
};

struct AutoscaleDecision {
  int64_t nodes = 0;                 // 0: submit nothing
  std::string why;                   // for the event (also when nothing is submitted, "" if idle)
  std::string held_by;               // nodes == 0 with jobs waiting: "backoff", "max_allocations", "max_workers"
};

AutoscaleDecision DecideAutoscale(const AutoscaleConfig& config, const AutoscaleView& view);

// The backoff after `failures` consecutive failed sbatch calls (1, 2, ...).
int64_t SbatchBackoffMs(const AutoscaleConfig& config, int64_t failures);

}  // namespace dd2

#endif  // DD2_COORDINATOR_AUTOSCALE_H_
