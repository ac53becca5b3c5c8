#include "common/client.h"

#include <random>

#include "absl/strings/str_cat.h"
#include "common/protocol.h"
#include "common/transport.h"

namespace dd2 {

CoordinatorClient::CoordinatorClient(std::string endpoint, int timeout_ms, int tries,
                                     std::optional<CurveClientKeys> keys)
    : endpoint_(std::move(endpoint)),
      timeout_ms_(timeout_ms),
      tries_(tries),
      next_request_id_(std::random_device{}() | 1ULL << 40),
      keys_(std::move(keys)),
      context_(1) {}

absl::StatusOr<proto::Envelope> CoordinatorClient::Call(proto::Envelope request) {
  request.set_request_id(next_request_id_++);
  if (request.sender().empty()) request.set_sender("dd2ctl");
  const std::string frame = EncodeEnvelope(request);
  for (int attempt = 0; attempt < tries_; ++attempt) {
    if (!socket_) {
      socket_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::dealer);
      absl::Status st = WatchHandshakes(context_, *socket_, monitor_);
      if (st.ok()) st = ConnectDealer(*socket_, endpoint_, "", /*immediate=*/false, keys_ ? &*keys_ : nullptr);
      if (!st.ok()) return st;
    }
    if (!SendFrames(*socket_, {frame}).ok()) {
      socket_.reset();
      continue;
    }
    while (true) {
      auto readable = PollReadable(*socket_, timeout_ms_);
      if (!readable.ok()) return readable.status();
      if (!*readable) break;
      auto frames = RecvFrames(*socket_);
      if (!frames.ok()) return frames.status();
      if (!frames->has_value() || (*frames)->empty()) continue;
      auto reply = DecodeEnvelope((*frames)->back());
      if (!reply.ok() || reply->request_id() != request.request_id()) continue;  // stale reply
      absl::Status st = StatusFromReply(*reply);
      if (!st.ok()) return st;
      return *std::move(reply);
    }
    ReadHandshakeEvents(monitor_, &handshake_failure_);
    socket_.reset();  // Lazy Pirate: a timed-out DEALER is discarded
  }
  if (!handshake_failure_.empty()) {
    return absl::UnauthenticatedError(absl::StrCat(
        "coordinator at ", endpoint_, " did not answer: ",
        keys_ ? handshake_failure_
              : "it requires CURVE keys and this client has none (--key and --coordinator-key, or a home with keys/)"));
  }
  return absl::UnavailableError(
      absl::StrCat("coordinator at ", endpoint_, " did not answer (", tries_, " tries of ",
                   timeout_ms_, " ms); is it running? try `dd2ctl up`"));
}

}  // namespace dd2
