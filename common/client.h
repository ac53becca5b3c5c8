// Request/reply client of the coordinator (Lazy Pirate): one DEALER, a per-try timeout, a few
// retries, and a fresh socket after each timeout. Requests are idempotent by design (see
// PROTOCOL.md), so a retry is safe. Not thread-safe.
#ifndef DD2_COMMON_CLIENT_H_
#define DD2_COMMON_CLIENT_H_

#include <memory>
#include <string>

#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

class CoordinatorClient {
 public:
  CoordinatorClient(std::string endpoint, int timeout_ms = 2000, int tries = 3);

  // Sends `request` and waits for the reply with the same request id. Unavailable when the
  // coordinator does not answer; the coordinator's Error reply becomes the returned status.
  absl::StatusOr<proto::Envelope> Call(proto::Envelope request);

 private:
  std::string endpoint_;
  int timeout_ms_;
  int tries_;
  uint64_t next_request_id_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> socket_;
};

}  // namespace dd2

#endif  // DD2_COMMON_CLIENT_H_
