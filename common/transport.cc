#include "common/transport.h"

#include <atomic>
#include <cstring>

#include "absl/strings/str_cat.h"
#include "common/protocol.h"
#include "common/status_macros.h"

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

absl::StatusOr<std::string> BindRouter(zmq::socket_t& router, const std::string& endpoint,
                                       const CurveKeyPair* curve_server) {
  try {
    CommonOptions(router);
    if (curve_server != nullptr) {
      router.set(zmq::sockopt::curve_server, 1);
      router.set(zmq::sockopt::curve_secretkey, curve_server->secret_key);
      router.set(zmq::sockopt::zap_domain, "dd2");
    }
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
                           const std::string& routing_id, bool immediate, const CurveClientKeys* curve) {
  try {
    CommonOptions(dealer);
    if (curve != nullptr) {
      dealer.set(zmq::sockopt::curve_serverkey, curve->server_public_key);
      dealer.set(zmq::sockopt::curve_publickey, curve->own.public_key);
      dealer.set(zmq::sockopt::curve_secretkey, curve->own.secret_key);
    }
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

absl::Status WatchHandshakes(zmq::context_t& context, zmq::socket_t& socket, zmq::socket_t& monitor) {
  static std::atomic<uint64_t> next{0};
  const std::string endpoint = absl::StrCat("inproc://dd2-handshakes-", next++);
  try {
    if (zmq_socket_monitor(socket.handle(), endpoint.c_str(),
                           ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL |
                               ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0) {
      return absl::UnavailableError(absl::StrCat("cannot monitor a socket: ", zmq_strerror(zmq_errno())));
    }
    monitor = zmq::socket_t(context, zmq::socket_type::pair);
    monitor.set(zmq::sockopt::linger, 0);
    monitor.connect(endpoint);
    return absl::OkStatus();
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot monitor a socket: ", e.what()));
  }
}

void ReadHandshakeEvents(zmq::socket_t& monitor, std::string* failure) {
  std::string& last = *failure;
  while (true) {
    auto frames = RecvFrames(monitor);
    if (!frames.ok() || !frames->has_value()) break;
    const auto& f = **frames;
    if (f.empty() || f[0].size() < 6) continue;
    uint16_t event;
    uint32_t value;
    std::memcpy(&event, f[0].data(), 2);
    std::memcpy(&value, f[0].data() + 2, 4);
    if (event == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      last.clear();
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) {
      last = absl::StrCat("the coordinator refused this key (ZAP status ", value,
                          "): its .pub is not in the coordinator's authorized-keys folder");
    } else if (event == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL && value == ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH) {
      last = "the coordinator and this client disagree about CURVE: one has keys and the other has none";
    } else {
      last = "the CURVE handshake failed: wrong coordinator public key, or a key the coordinator cannot read";
    }
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

absl::StatusOr<std::optional<std::vector<std::string>>> RecvFrames(zmq::socket_t& socket, std::string* user_id) {
  try {
    std::vector<std::string> frames;
    while (true) {
      zmq::message_t msg;
      auto got = socket.recv(msg, frames.empty() ? zmq::recv_flags::dontwait : zmq::recv_flags::none);
      if (!got) return std::optional<std::vector<std::string>>();
      if (user_id != nullptr) {
        if (frames.empty()) user_id->clear();
        // nullptr: no ZAP handler authenticated the connection. Read from every part, as a
        // ROUTER's routing-id frame may carry no metadata.
        const char* id = zmq_msg_gets(msg.handle(), "User-Id");
        if (id != nullptr && user_id->empty()) *user_id = id;
      }
      frames.emplace_back(static_cast<const char*>(msg.data()), msg.size());
      if (!msg.more()) break;
    }
    return std::optional<std::vector<std::string>>(std::move(frames));
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("recv failed: ", e.what()));
  }
}

absl::StatusOr<bool> PollReadable(zmq::socket_t& socket, long timeout_ms) {
  DD2_ASSIGN_OR_RETURN(std::vector<bool> readable, PollReadable(std::vector<zmq::socket_t*>{&socket}, timeout_ms));
  return readable[0];
}

absl::StatusOr<std::vector<bool>> PollReadable(const std::vector<zmq::socket_t*>& sockets, long timeout_ms, int fd) {
  std::vector<zmq::pollitem_t> items;
  for (zmq::socket_t* s : sockets) items.push_back({s->handle(), 0, ZMQ_POLLIN, 0});
  if (fd >= 0) items.push_back({nullptr, fd, ZMQ_POLLIN, 0});
  std::vector<bool> readable(items.size(), false);
  try {
    zmq::poll(items.data(), items.size(), std::chrono::milliseconds(timeout_ms));
  } catch (const zmq::error_t& e) {
    if (e.num() == EINTR) return readable;
    return absl::UnavailableError(absl::StrCat("poll failed: ", e.what()));
  }
  for (size_t i = 0; i < items.size(); ++i) readable[i] = (items[i].revents & ZMQ_POLLIN) != 0;
  return readable;
}

}  // namespace dd2
