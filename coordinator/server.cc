#include "coordinator/server.h"

#include <cstdio>
#include <filesystem>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/clock.h"
#include "common/home.h"
#include "common/protocol.h"
#include "common/status_macros.h"
#include "common/transport.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/job_store.h"

namespace dd2 {

absl::Status CoordinatorServer::Run() {
  DD2_RETURN_IF_ERROR(ValidateConfig(config_));
  if (config_.endpoint.rfind("tcp://127.0.0.1:", 0) != 0 && config_.endpoint.rfind("ipc://", 0) != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("endpoint ", config_.endpoint, " is not loopback; dd2 listens beyond ",
                     "loopback only with CURVE keys, which this build does not have yet"));
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
  zmq::socket_t router(context, zmq::socket_type::router);
  DD2_ASSIGN_OR_RETURN(std::string bound, BindRouter(router, config_.endpoint));

  RealClock clock;
  CoordinatorService* service_ptr = nullptr;
  CoordinatorService service(config_, store.get(), &clock,
                             [&](const std::string& peer, const proto::Envelope& env) {
                               absl::Status st = SendFrames(router, {peer, EncodeEnvelope(env)});
                               if (!st.ok()) service_ptr->CountSendFailure(peer, absl::IsNotFound(st));
                             });
  service_ptr = &service;
  service.SetEndpoint(bound);
  SlurmLaunchSpec base;
  base.coordinator = bound;
  base.home = std::filesystem::absolute(config_.home).lexically_normal().string();
  base.worker_binary = (std::filesystem::read_symlink("/proc/self/exe", ec).parent_path() / "dd2-worker").string();
  service.SetSlurm(NewShellSlurmCommands(10000), std::move(autoscale), base);
  DD2_RETURN_IF_ERROR(service.Recover());
  DD2_RETURN_IF_ERROR(WriteFileAtomic(config_.home + "/endpoint", bound + "\n"));
  std::fprintf(stderr, "dd2-coordinator: listening on %s, home %s\n", bound.c_str(), config_.home.c_str());
  std::fflush(stderr);

  const long poll_ms = std::max<long>(5, config_.heartbeat_interval_ms / 4);
  int64_t last_tick = 0;
  while (!stop_ && !service.shutdown_requested()) {
    auto readable = PollReadable(router, poll_ms);
    if (!readable.ok()) return readable.status();
    // Drain a bounded batch so ticks keep their cadence under load.
    for (int i = 0; i < 1000 && *readable; ++i) {
      auto frames = RecvFrames(router);
      if (!frames.ok()) return frames.status();
      if (!frames->has_value()) break;
      auto& f = **frames;
      if (f.size() != 2) {
        service.HandleFrame(f.empty() ? "" : f[0], "");  // counted as malformed
        continue;
      }
      service.HandleFrame(f[0], f[1]);
    }
    service.Schedule();
    const int64_t now = clock.NowMs();
    if (now - last_tick >= poll_ms) {
      service.Tick();
      last_tick = now;
    }
  }
  std::fprintf(stderr, "dd2-coordinator: stopping\n");
  return absl::OkStatus();
}

}  // namespace dd2
