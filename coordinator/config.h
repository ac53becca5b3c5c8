// Coordinator settings, each with its default and meaning. Set by dd2-coordinator's flags.
#ifndef DD2_COORDINATOR_CONFIG_H_
#define DD2_COORDINATOR_CONFIG_H_

#include <cstdint>
#include <string>

#include "absl/status/status.h"

namespace dd2 {

struct CoordinatorConfig {
  // Where the ROUTER binds; port 0 picks a free one. Non-loopback addresses are refused
  // without CURVE keys.
  std::string endpoint = "tcp://127.0.0.1:0";
  // CURVE: the coordinator's key file (role coordinator) and the folder of authorized peers'
  // .pub files (common/curve_keys.h). Both or neither; with neither, only loopback, and every
  // local peer may send every message but shutdown.
  std::string curve_secret;
  std::string authorized_keys;
  // The HTTP endpoint (/metrics, /api/v1, the dashboard) as ADDR:PORT; port 0 picks one; ""
  // = none. Beyond loopback only with CURVE keys; with keys every request needs the token in
  // <home>/http-token.
  std::string http = "127.0.0.1:0";
  // The built dashboard (index.html, assets/); "" = <dd2-coordinator's folder>/dashboard.
  std::string dashboard_dir;
  // Data directory: coordinator.db, logs/.
  std::string home = ".dd2";
  // The storage root workers write job outputs under, <root>/<run>/<job> (workers' --artifacts);
  // "" = <home>/artifacts. The coordinator reads and deletes only files inside a job's folder.
  std::string artifacts_root;
  // Workers heartbeat at this interval; the coordinator acknowledges each heartbeat.
  int64_t heartbeat_interval_ms = 1000;
  // A worker silent for interval x liveness is suspect (no new work, keeps its jobs).
  int64_t heartbeat_liveness = 3;
  // A worker silent this long is lost: its attempts fail with "worker lost" and are retried.
  int64_t lost_after_ms = 10000;
  // Backoff before retry n is base x 2^(n-1), capped.
  int64_t retry_backoff_ms = 1000;
  int64_t retry_backoff_max_ms = 60000;
  // Attempts lost with their worker are retried this many times without using `retries`.
  int64_t lost_retries = 3;
  // Cancel: SIGTERM, then SIGKILL after this grace (applied by the worker).
  int64_t cancel_grace_ms = 5000;
  // Gang rendezvous: each attempt's rank 0 serves its store on a port taken in turn from
  // [base, base + span).
  int64_t rendezvous_port_base = 29500;
  int64_t rendezvous_port_span = 1000;
  // A YAML file of autoscaler settings (coordinator/autoscale.h): submit SLURM allocations of
  // workers when ready jobs wait. "" = no autoscaling.
  std::string slurm_autoscale;
};

// InvalidArgument naming the field when a value is out of range.
absl::Status ValidateConfig(const CoordinatorConfig& config);

}  // namespace dd2

#endif  // DD2_COORDINATOR_CONFIG_H_
