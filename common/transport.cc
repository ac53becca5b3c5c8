#include "common/transport.h"

#include "absl/strings/str_cat.h"
#include "common/protocol.h"

namespace dd2 {
namespace {

constexpr int kHighWaterMark = 10000;

void CommonOptions(zmq::socket_t& s) {
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::sndhwm, kHighWaterMark);
  s.set(zmq::sockopt::rcvhwm, kHighWaterMark);
  s.set(zmq::sockopt::maxmsgsize, kMaxFrameBytes);
}

}  // namespace

absl::StatusOr<std::string> BindRouter(zmq::socket_t& router, const std::string& endpoint) {
  try {
    CommonOptions(router);
    router.set(zmq::sockopt::router_mandatory, 1);
    router.set(zmq::sockopt::router_handover, 1);
    std::string ep = endpoint;
    if (ep.size() > 2 && ep.substr(ep.size() - 2) == ":0") ep = ep.substr(0, ep.size() - 1) + "*";
    router.bind(ep);
    return router.get(zmq::sockopt::last_endpoint);
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot bind ", endpoint, ": ", e.what()));
  }
}

absl::Status ConnectDealer(zmq::socket_t& dealer, const std::string& endpoint,
                           const std::string& routing_id, bool immediate) {
  try {
    CommonOptions(dealer);
    dealer.set(zmq::sockopt::immediate, immediate ? 1 : 0);
    dealer.set(zmq::sockopt::reconnect_ivl, 100);
    dealer.set(zmq::sockopt::reconnect_ivl_max, 2000);
    if (!routing_id.empty()) dealer.set(zmq::sockopt::routing_id, routing_id);
    dealer.connect(endpoint);
    return absl::OkStatus();
  } catch (const zmq::error_t& e) {
    return absl::InvalidArgumentError(absl::StrCat("cannot connect to ", endpoint, ": ", e.what()));
  }
}

absl::Status SendFrames(zmq::socket_t& socket, const std::vector<std::string>& frames) {
  try {
    for (size_t i = 0; i < frames.size(); ++i) {
      auto flags = zmq::send_flags::dontwait;
      if (i + 1 < frames.size()) flags = flags | zmq::send_flags::sndmore;
      if (!socket.send(zmq::buffer(frames[i]), flags)) {
        return absl::UnavailableError("peer queue full");
      }
    }
    return absl::OkStatus();
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return absl::NotFoundError("peer unreachable: its connection is gone");
    return absl::UnavailableError(absl::StrCat("send failed: ", e.what()));
  }
}

absl::StatusOr<std::optional<std::vector<std::string>>> RecvFrames(zmq::socket_t& socket) {
  try {
    std::vector<std::string> frames;
    while (true) {
      zmq::message_t msg;
      auto got = socket.recv(msg, frames.empty() ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
      if (!got) return std::optional<std::vector<std::string>>();
      frames.emplace_back(static_cast<const char*>(msg.data()), msg.size());
      if (!msg.more()) break;
    }
    return std::optional<std::vector<std::string>>(std::move(frames));
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("recv failed: ", e.what()));
  }
}

absl::StatusOr<bool> PollReadable(zmq::socket_t& socket, long timeout_ms) {
  try {
    zmq::pollitem_t items[] = {{socket.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(timeout_ms));
    return (items[0].revents & ZMQ_POLLIN) != 0;
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return false;
    return absl::UnavailableError(absl::StrCat("poll failed: ", e.what()));
  }
}

}  // namespace dd2
