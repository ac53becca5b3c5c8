// Request/reply client of the coordinator (Lazy Pirate): one DEALER, a per-try timeout, a few
// retries, and a fresh socket after each timeout. Requests are idempotent by design (see
// PROTOCOL.md), so a retry is safe. When the coordinator does not answer because the CURVE
// handshake failed (no key, a wrong key, an unlisted key), the error says so. Not thread-safe.
#ifndef DD2_COMMON_CLIENT_H_
#define DD2_COMMON_CLIENT_H_

#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "common/curve_keys.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

class CoordinatorClient {
 public:
  // With `keys`, a CURVE client (the coordinator's ROUTER must be a CURVE server).
  CoordinatorClient(std::string endpoint, int timeout_ms = 2000, int tries = 3,
                    std::optional<CurveClientKeys> keys = std::nullopt);

  // Sends `request` and waits for the reply with the same request id. Unavailable when the
  // coordinator does not answer; the coordinator's Error reply becomes the returned status.
  absl::StatusOr<proto::Envelope> Call(proto::Envelope request);

 private:
  std::string endpoint_;
  int timeout_ms_;
  int tries_;
  uint64_t next_request_id_;
  std::optional<CurveClientKeys> keys_;
  zmq::context_t context_;
  std::unique_ptr<zmq::socket_t> socket_;
  zmq::socket_t monitor_;
  std::string handshake_failure_;
};

}  // namespace dd2

#endif  // DD2_COMMON_CLIENT_H_
