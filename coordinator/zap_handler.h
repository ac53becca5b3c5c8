// The coordinator's ZAP handler (ZeroMQ RFC 27) for its CURVE ROUTER: a peer completes the
// handshake only when its public key is in the authorized-keys folder; the reply's user id is
// that key, and the loop asks RoleOf(user id) for every message, so a key removed from the
// folder loses its open connections' rights at the next reload, and a key added is accepted,
// both without a restart. The folder is read at creation, at most once a second on Refresh(),
// and before each handshake; a folder that stops parsing keeps the last good set (and says so
// on stderr). Runs on the loop thread: poll socket() with the ROUTER and call HandleRequest().
#ifndef DD2_COORDINATOR_ZAP_HANDLER_H_
#define DD2_COORDINATOR_ZAP_HANDLER_H_

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "absl/status/statusor.h"
#include "common/clock.h"
#include "common/curve_keys.h"

namespace dd2 {

// The reply frames to one ZAP request's frames (pure): 200 with the Z85 public key as user id
// when the mechanism is CURVE and the key is authorized, 400 otherwise.
std::vector<std::string> ZapReply(const std::vector<std::string>& request,
                                  const std::map<std::string, AuthorizedKey>& authorized);

class ZapHandler {
 public:
  // Binds inproc://zeromq.zap.01 in `context` (before any CURVE socket of it binds) and loads
  // `authorized_dir`: InvalidArgument/NotFound naming the folder or file that fails.
  static absl::StatusOr<std::unique_ptr<ZapHandler>> Create(zmq::context_t& context, std::string authorized_dir,
                                                            const Clock* clock);
  zmq::socket_t& socket() { return socket_; }
  // Answers the request waiting on socket().
  void HandleRequest();
  void Refresh();
  // The role of a connection authenticated with `user_id`, if its key is still authorized.
  std::optional<Role> RoleOf(const std::string& user_id) const;
  int64_t rejected() const { return rejected_; }

 private:
  ZapHandler(zmq::context_t& context, std::string dir, const Clock* clock);
  void Reload();

  zmq::socket_t socket_;
  std::string dir_;
  const Clock* clock_;
  std::map<std::string, AuthorizedKey> keys_;
  std::string last_error_;
  int64_t loaded_ms_ = 0;
  int64_t rejected_ = 0;
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_ZAP_HANDLER_H_
