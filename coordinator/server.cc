#include "coordinator/server.h"

#include <sys/stat.h>

#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/home.h"
#include "common/protocol.h"
#include "common/status_macros.h"
#include "common/transport.h"
#include "common/checkpoint_manifest.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/http_server.h"
#include "coordinator/snapshot.h"
#include "coordinator/job_store.h"
#include "coordinator/zap_handler.h"

namespace dd2 {

namespace {

constexpr int64_t kSnapshotEveryMs = 500;  // at most this often, and only when the HTTP thread asks

}  // namespace

absl::StatusOr<std::unique_ptr<HttpServer>> CoordinatorServer::StartHttp(const CurveKeyPair* key,
                                                                         SnapshotBox* snapshots) {
  HttpServerOptions o;
  DD2_RETURN_IF_ERROR(ParseHttpAddress(config_.http, &o));
  if (o.address != "127.0.0.1" && key == nullptr) {
    return absl::InvalidArgumentError(absl::StrCat(
        "--http ", config_.http, " is not loopback, and dd2 serves HTTP beyond loopback only with CURVE keys "
        "(then every request needs the token in <home>/http-token); see README, Security"));
  }
  if (key != nullptr) {  // derived from the coordinator's secret key: it changes when the key does
    o.token = Sha256Hex("dd2-http-token:" + key->secret_key);
    DD2_RETURN_IF_ERROR(WriteFileAtomic(config_.home + "/http-token", o.token + "\n"));
    ::chmod((config_.home + "/http-token").c_str(), 0600);
  }
  std::error_code ec;
  o.dashboard_dir = !config_.dashboard_dir.empty()
                        ? config_.dashboard_dir
                        : (std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "dashboard").string();
  o.db_path = config_.home + "/coordinator.db";
  DD2_ASSIGN_OR_RETURN(std::unique_ptr<HttpServer> http, HttpServer::Start(o, snapshots));
  const std::string url = absl::StrCat("http://", o.address, ":", http->port(), "/");
  DD2_RETURN_IF_ERROR(WriteFileAtomic(config_.home + "/http", url + "\n"));
  std::fprintf(stderr, "dd2-coordinator: HTTP on %s (/metrics, /api/v1, dashboard from %s)\n", url.c_str(),
               o.dashboard_dir.c_str());
  return http;
}

absl::Status CoordinatorServer::Run() {
  DD2_RETURN_IF_ERROR(ValidateConfig(config_));
  const bool keyed = !config_.curve_secret.empty();
  if (keyed != !config_.authorized_keys.empty()) {
    return absl::InvalidArgumentError("--curve-secret and --authorized-keys go together: give both or neither");
  }
  const bool loopback = config_.endpoint.rfind("tcp://127.0.0.1:", 0) == 0 || config_.endpoint.rfind("ipc://", 0) == 0;
  if (!keyed && !loopback) {
    return absl::InvalidArgumentError(absl::StrCat(
        "endpoint ", config_.endpoint, " is not loopback, and dd2 listens beyond loopback only with CURVE keys.\n",
        "Create them (README, Security):\n",
        "  dd2ctl keygen --out KEYS --role coordinator\n",
        "  dd2ctl keygen --out KEYS/peers --role worker --name worker-1   # and --role client / admin keys\n",
        "  mkdir -p KEYS/authorized && cp KEYS/peers/*.pub KEYS/authorized/\n",
        "then start with: dd2-coordinator --curve-secret KEYS/coordinator.key --authorized-keys KEYS/authorized"));
  }
  std::optional<CurveKeyPair> server_key;
  if (keyed) {
    DD2_ASSIGN_OR_RETURN(server_key, ReadSecretKeyFile(config_.curve_secret));
    if (server_key->role != Role::kCoordinator) {
      return absl::InvalidArgumentError(absl::StrCat(config_.curve_secret, ": role ", RoleName(server_key->role),
                                                     "; the coordinator needs a key made with --role coordinator"));
    }
  }
  std::error_code ec;
  std::filesystem::create_directories(config_.home + "/logs", ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", config_.home, ": ", ec.message()));
  std::optional<AutoscaleConfig> autoscale;
  if (!config_.slurm_autoscale.empty()) {
    DD2_ASSIGN_OR_RETURN(autoscale, LoadAutoscaleConfig(config_.slurm_autoscale));
  }
  DD2_ASSIGN_OR_RETURN(std::unique_ptr<JobStore> store, OpenSqliteJobStore(config_.home + "/coordinator.db"));

  zmq::context_t context(1);
  context.set(zmq::ctxopt::max_sockets, 65536);
  RealClock clock;
  std::unique_ptr<ZapHandler> zap;  // bound before the ROUTER, so no handshake goes unchecked
  if (keyed) {
    DD2_ASSIGN_OR_RETURN(zap, ZapHandler::Create(context, config_.authorized_keys, &clock));
  }
  zmq::socket_t router(context, zmq::socket_type::router);
  DD2_ASSIGN_OR_RETURN(std::string bound, BindRouter(router, config_.endpoint, keyed ? &*server_key : nullptr));

  CoordinatorService* service_ptr = nullptr;
  CoordinatorService service(config_, store.get(), &clock,
                             [&](const std::string& peer, const proto::Envelope& env) {
                               absl::Status st = SendFrames(router, {peer, EncodeEnvelope(env)});
                               if (!st.ok()) service_ptr->CountSendFailure(peer, absl::IsNotFound(st));
                             });
  service_ptr = &service;
  service.SetEndpoint(bound);
  service.SetKeyed(keyed);
  SlurmLaunchSpec base;
  base.coordinator = bound;
  base.home = std::filesystem::absolute(config_.home).lexically_normal().string();
  base.worker_binary = (std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "dd2-worker").string();
  service.SetSlurm(NewShellSlurmCommands(10000), std::move(autoscale), base);
  DD2_RETURN_IF_ERROR(service.Recover());
  SnapshotBox snapshots;  // filled when the HTTP thread first asks
  std::unique_ptr<HttpServer> http;
  if (!config_.http.empty()) {
    DD2_ASSIGN_OR_RETURN(http, StartHttp(server_key ? &*server_key : nullptr, &snapshots));
  }
  DD2_RETURN_IF_ERROR(WriteFileAtomic(config_.home + "/endpoint", bound + "\n"));
  std::fprintf(stderr, "dd2-coordinator: listening on %s (%s), home %s\n", bound.c_str(),
               (keyed ? "CURVE, authorized keys in " + config_.authorized_keys : "no keys: loopback only").c_str(),
               config_.home.c_str());
  std::fflush(stderr);

  const long poll_ms = std::max<long>(5, config_.heartbeat_interval_ms / 4);
  int64_t last_tick = 0, last_snapshot = clock.NowMs();
  std::vector<zmq::socket_t*> sockets = {&router};
  if (zap) sockets.push_back(&zap->socket());
  while (!stop_ && !service.shutdown_requested()) {
    auto readable = PollReadable(sockets, poll_ms, http ? snapshots.wake_fd() : -1);
    if (!readable.ok()) return readable.status();
    if (zap && (*readable)[1]) {
      zap->HandleRequest();
      service.SetRejectedConnections(zap->rejected());
    }
    // Drain a bounded batch so ticks keep their cadence under load.
    for (int i = 0; i < 1000 && (*readable)[0]; ++i) {
      std::string user_id;
      auto frames = RecvFrames(router, &user_id);
      if (!frames.ok()) return frames.status();
      if (!frames->has_value()) break;
      auto& f = **frames;
      // Keyed: the role of the connection's key now (revoked when it left the folder since).
      const Role role = zap ? zap->RoleOf(user_id).value_or(Role::kRevoked) : Role::kLocal;
      if (f.size() != 2) {
        service.HandleFrame(f.empty() ? "" : f[0], "", role);  // counted as malformed
        continue;
      }
      service.HandleFrame(f[0], f[1], role);
    }
    service.Schedule();
    const int64_t now = clock.NowMs();
    if (now - last_tick >= poll_ms) {
      if (zap) zap->Refresh();
      service.Tick();
      last_tick = now;
    }
    if (http && now - last_snapshot >= kSnapshotEveryMs && snapshots.TakeRequest()) {
      snapshots.Publish(service.MakeSnapshot());
      last_snapshot = now;
    }
  }
  std::fprintf(stderr, "dd2-coordinator: stopping\n");
  return absl::OkStatus();
}

}  // namespace dd2
