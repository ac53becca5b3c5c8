// HttpServer: the coordinator's HTTP endpoint on Boost.Asio/Beast, on a thread of its own. It
// answers from a snapshot at most 1 s old that the loop thread publishes when asked (snapshot.h) through the routes
// of http_api.h, and reads metric series from SQLite on its own read-only use of the file; it
// never writes SQLite or touches the loop's state. Replies are cached per snapshot and page, so
// many pollers of one page cost one rendering a snapshot. Bounded: at most `max_connections` at
// once (more are closed at accept), request headers of at most `max_header_bytes` (431), no
// request bodies (400), and a request must arrive whole within `request_timeout_ms` (slowloris:
// closed). Malformed requests get a 4xx and the server keeps serving. With a `token`, every
// request needs "Authorization: Bearer TOKEN" or "?token=TOKEN" (401 otherwise). Thread-safe.
#ifndef DD2_COORDINATOR_HTTP_SERVER_H_
#define DD2_COORDINATOR_HTTP_SERVER_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/status/statusor.h"
#include "coordinator/snapshot.h"

namespace dd2 {

struct HttpServerOptions {
  std::string address = "127.0.0.1";
  uint16_t port = 0;  // 0: any free port
  int max_connections = 64;
  uint32_t max_header_bytes = 8192;
  int request_timeout_ms = 5000;
  std::string token;          // "" = no token needed (loopback)
  std::string dashboard_dir;  // the built dashboard (index.html, assets/); "" = none
  std::string db_path;        // the coordinator's SQLite file, read for metric series
};

// "ADDR:PORT" (IPv4) into options; InvalidArgument naming the flag otherwise.
absl::Status ParseHttpAddress(const std::string& flag_value, HttpServerOptions* options);

class HttpServer {
 public:
  // Binds and starts the thread. Unavailable when the address cannot be bound.
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(HttpServerOptions options, SnapshotBox* box);
  ~HttpServer();  // stops the thread; open connections are closed

  uint16_t port() const;

  class Impl;

 private:
  explicit HttpServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_HTTP_SERVER_H_
