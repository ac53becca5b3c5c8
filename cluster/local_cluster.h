// A local cluster under one dd2 home: `dd2ctl up` starts dd2-coordinator and N dd2-worker
// daemons (found next to the running dd2ctl) in the background on loopback, records their pids,
// and waits until the coordinator answers and the workers have registered; `dd2ctl down` stops
// them (SIGTERM, then SIGKILL after a grace). Layout: common/home.h. Not thread-safe.
#ifndef DD2_CLUSTER_LOCAL_CLUSTER_H_
#define DD2_CLUSTER_LOCAL_CLUSTER_H_

#include <string>
#include <vector>

#include "absl/status/status.h"

namespace dd2 {

struct UpOptions {
  std::string home;
  int workers = 2;
  int slots = 1;
  int threads = 0;  // dd2-worker --threads: intra-op threads per job (0: inherit; LibTorch jobs default to 1)
  std::vector<std::string> coordinator_args;  // extra flags, e.g. --lost-after-ms=2000
  // CURVE: create <home>/keys (EnsureKeyedHome) and start keyed. A home with a coordinator key
  // always starts keyed; the workers and dd2ctl then take their keys from the home.
  bool curve = false;
  int wait_ms = 20000;
};

// Idempotent: a coordinator already running on `home` is kept, and only missing workers
// (local-1 .. local-N) are started. Unavailable with the log's tail when a daemon dies at start.
absl::Status Up(const UpOptions& options);

// Stops every daemon recorded in `home`. Ok when nothing was running.
absl::Status Down(const std::string& home, int grace_ms = 5000);

// Whether the pid recorded in `pid_file` is a live dd2 process.
bool PidFileAlive(const std::string& pid_file);

}  // namespace dd2

#endif  // DD2_CLUSTER_LOCAL_CLUSTER_H_
