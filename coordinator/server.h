// CoordinatorServer: the coordinator's loop thread. It binds the ROUTER, opens the SQLite store
// under the home directory, recovers, records the endpoint in <home>/endpoint, and then polls
// the socket, feeding frames to CoordinatorService and ticking it at least every
// heartbeat_interval/4; with an HTTP endpoint it publishes a snapshot when the HTTP thread asks. Run() returns when Stop() is called (from a signal handler: it only
// sets a flag), when a client asks for shutdown, or on a fatal error.
#ifndef DD2_COORDINATOR_SERVER_H_
#define DD2_COORDINATOR_SERVER_H_

#include <atomic>

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "common/curve_keys.h"
#include "coordinator/config.h"
#include "coordinator/http_server.h"
#include "coordinator/snapshot.h"

namespace dd2 {

class CoordinatorServer {
 public:
  explicit CoordinatorServer(CoordinatorConfig config) : config_(std::move(config)) {}
  absl::Status Run();
  void Stop() { stop_ = true; }

 private:
  // The HTTP endpoint of config_.http, serving `snapshots`; records its URL in <home>/http.
  absl::StatusOr<std::unique_ptr<HttpServer>> StartHttp(const CurveKeyPair* key, SnapshotBox* snapshots);

  CoordinatorConfig config_;
  std::atomic<bool> stop_{false};
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_SERVER_H_
