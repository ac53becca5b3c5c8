// ZeroMQ adapter: the only place cppzmq exceptions are caught. Sockets get dd2's standard
// options (linger 0, bounded queues, capped frame size). A socket belongs to the thread that
// made it; nothing here is thread-safe.
#ifndef DD2_COMMON_TRANSPORT_H_
#define DD2_COMMON_TRANSPORT_H_

#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd2 {

// A ROUTER bound to `endpoint` (tcp://127.0.0.1:0 picks a free port) with ROUTER_MANDATORY and
// ROUTER_HANDOVER set. Returns the endpoint actually bound.
absl::StatusOr<std::string> BindRouter(zmq::socket_t& router, const std::string& endpoint);

// Standard options for a DEALER that talks to the coordinator; `routing_id` may be empty.
// `immediate`: drop sends while not connected (daemons, which resend on their own schedule)
// instead of queueing them until the connection is up (request/reply clients).
absl::Status ConnectDealer(zmq::socket_t& dealer, const std::string& endpoint,
                           const std::string& routing_id, bool immediate);

// Sends the frames as one multipart message without blocking (ROUTER_MANDATORY). NotFound when
// the peer's connection is gone; Unavailable when its queue is full.
absl::Status SendFrames(zmq::socket_t& socket, const std::vector<std::string>& frames);

// Receives one multipart message if one is waiting; nullopt when none is.
absl::StatusOr<std::optional<std::vector<std::string>>> RecvFrames(zmq::socket_t& socket);

// Waits up to timeout_ms for `socket` to become readable. Returns whether it is.
absl::StatusOr<bool> PollReadable(zmq::socket_t& socket, long timeout_ms);

}  // namespace dd2

#endif  // DD2_COMMON_TRANSPORT_H_
