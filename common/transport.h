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
#include "common/curve_keys.h"

namespace dd2 {

// A ROUTER bound to `endpoint` (tcp://127.0.0.1:0 picks a free port) with ROUTER_MANDATORY and
// ROUTER_HANDOVER set. Returns the endpoint actually bound. With `curve_server` (the
// coordinator's key pair) it is a CURVE server: every peer must complete the handshake, and the
// context's ZAP handler (coordinator/zap_handler.h, bound first) decides which keys may.
absl::StatusOr<std::string> BindRouter(zmq::socket_t& router, const std::string& endpoint,
                                       const CurveKeyPair* curve_server = nullptr);

// Standard options for a DEALER that talks to the coordinator; `routing_id` may be empty.
// `immediate`: drop sends while not connected (daemons, which resend on their own schedule)
// instead of queueing them until the connection is up (request/reply clients). With `curve`,
// a CURVE client of the coordinator whose public key it names.
absl::Status ConnectDealer(zmq::socket_t& dealer, const std::string& endpoint,
                           const std::string& routing_id, bool immediate,
                           const CurveClientKeys* curve = nullptr);

// Reports `socket`'s failed handshakes on `monitor` (a PAIR in the same context, made here);
// call before connecting.
absl::Status WatchHandshakes(zmq::context_t& context, zmq::socket_t& socket, zmq::socket_t& monitor);
// Reads what `monitor` reported, without blocking, into `failure`: why the latest handshake
// failed, in words, or "" after one succeeded; unchanged when nothing was reported.
void ReadHandshakeEvents(zmq::socket_t& monitor, std::string* failure);

// Sends the frames as one multipart message without blocking (ROUTER_MANDATORY). NotFound when
// the peer's connection is gone; Unavailable when its queue is full.
absl::Status SendFrames(zmq::socket_t& socket, const std::vector<std::string>& frames);

// Receives one multipart message if one is waiting; nullopt when none is. `user_id`, when
// given, gets the ZAP user id the sender's connection was authenticated with ("" without one).
absl::StatusOr<std::optional<std::vector<std::string>>> RecvFrames(zmq::socket_t& socket,
                                                                   std::string* user_id = nullptr);

// Waits up to timeout_ms for `socket` to become readable. Returns whether it is.
absl::StatusOr<bool> PollReadable(zmq::socket_t& socket, long timeout_ms);
// The same for several sockets: which of them are readable (all false after the timeout).
// With `fd` >= 0 (a plain file descriptor, e.g. an eventfd) the result has one more entry, its.
absl::StatusOr<std::vector<bool>> PollReadable(const std::vector<zmq::socket_t*>& sockets, long timeout_ms,
                                               int fd = -1);

}  // namespace dd2

#endif  // DD2_COMMON_TRANSPORT_H_
