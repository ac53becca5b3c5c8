#include "coordinator/zap_handler.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/transport.h"

namespace dd2 {

std::vector<std::string> ZapReply(const std::vector<std::string>& request,
                                  const std::map<std::string, AuthorizedKey>& authorized) {
  // Request: version, request id, domain, address, routing id, mechanism, credentials...
  const std::string request_id = request.size() > 1 ? request[1] : "";
  auto reply = [&](const char* code, const char* text, const std::string& user) {
    return std::vector<std::string>{"1.0", request_id, code, text, user, ""};
  };
  if (request.size() < 6 || request[0] != "1.0") return reply("500", "malformed ZAP request", "");
  if (request[5] != "CURVE" || request.size() != 7 || request[6].size() != 32) {
    return reply("400", "CURVE required", "");
  }
  char z85[41];
  if (zmq_z85_encode(z85, reinterpret_cast<const uint8_t*>(request[6].data()), 32) == nullptr) {
    return reply("400", "bad key", "");
  }
  if (!authorized.count(z85)) return reply("400", "key not authorized", "");
  return reply("200", "OK", z85);
}

ZapHandler::ZapHandler(zmq::context_t& context, std::string dir, const Clock* clock)
    : socket_(context, zmq::socket_type::rep), dir_(std::move(dir)), clock_(clock) {}

absl::StatusOr<std::unique_ptr<ZapHandler>> ZapHandler::Create(zmq::context_t& context, std::string authorized_dir,
                                                               const Clock* clock) {
  std::unique_ptr<ZapHandler> h(new ZapHandler(context, std::move(authorized_dir), clock));
  DD2_ASSIGN_OR_RETURN(h->keys_, LoadAuthorizedKeys(h->dir_));
  h->loaded_ms_ = clock->NowMs();
  try {
    h->socket_.set(zmq::sockopt::linger, 0);
    h->socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    return absl::UnavailableError(absl::StrCat("cannot bind the ZAP handler: ", e.what()));
  }
  return h;
}

void ZapHandler::Reload() {
  loaded_ms_ = clock_->NowMs();
  auto keys = LoadAuthorizedKeys(dir_);
  if (!keys.ok()) {
    const std::string error(keys.status().message());
    if (error != last_error_) {
      std::fprintf(stderr, "dd2-coordinator: authorized keys not reloaded, keeping the last good set: %s\n", error.c_str());
      std::fflush(stderr);
    }
    last_error_ = error;
    return;
  }
  last_error_.clear();
  keys_ = *std::move(keys);
}

void ZapHandler::Refresh() {
  if (clock_->NowMs() - loaded_ms_ >= 1000) Reload();
}

void ZapHandler::HandleRequest() {
  auto request = RecvFrames(socket_);
  if (!request.ok() || !request->has_value()) return;
  Reload();
  auto reply = ZapReply(**request, keys_);
  if (reply[2] != "200") ++rejected_;
  SendFrames(socket_, reply).IgnoreError();
}

std::optional<Role> ZapHandler::RoleOf(const std::string& user_id) const {
  auto it = keys_.find(user_id);
  if (it == keys_.end()) return std::nullopt;
  return it->second.role;
}

}  // namespace dd2
