// dd2-coordinator: parses flags and runs the CoordinatorServer until SIGTERM/SIGINT.
#include <sys/resource.h>

#include <csignal>
#include <cstdio>

#include <CLI/CLI.hpp>

#include "common/home.h"
#include "coordinator/server.h"

namespace {
dd2::CoordinatorServer* g_server = nullptr;
void OnSignal(int) {
  if (g_server) g_server->Stop();
}
}  // namespace

int main(int argc, char** argv) {
  dd2::CoordinatorConfig config;
  std::string home;
  CLI::App app{"dd2-coordinator: schedules dd2 runs on workers and records them in SQLite"};
  app.add_option("--home", home, "data directory (default $DD2_HOME or ./.dd2)");
  app.add_option("--endpoint", config.endpoint,
                 "ZeroMQ endpoint to bind; default: the one recorded in the home, else tcp://127.0.0.1:0");
  app.add_option("--curve-secret", config.curve_secret,
                 "CURVE key file of the coordinator (dd2ctl keygen --role coordinator); peers must authenticate")
      ->check(CLI::ExistingFile);
  app.add_option("--authorized-keys", config.authorized_keys,
                 "folder of the .pub files of the peers allowed to connect; each key's role limits what it may send "
                 "(re-read while running: add or remove a file to rotate keys)")
      ->check(CLI::ExistingDirectory);
  app.add_option("--artifacts", config.artifacts_root,
                 "the workers' storage root, <root>/<run>/<job> (default <home>/artifacts): checkpoint paths "
                 "reported outside a job's folder are refused");
  app.add_option("--heartbeat-interval-ms", config.heartbeat_interval_ms, "worker heartbeat interval")->capture_default_str();
  app.add_option("--heartbeat-liveness", config.heartbeat_liveness, "missed heartbeats before suspect")->capture_default_str();
  app.add_option("--lost-after-ms", config.lost_after_ms, "silence before a worker is lost")->capture_default_str();
  app.add_option("--retry-backoff-ms", config.retry_backoff_ms, "first retry backoff")->capture_default_str();
  app.add_option("--retry-backoff-max-ms", config.retry_backoff_max_ms, "largest retry backoff")->capture_default_str();
  app.add_option("--lost-retries", config.lost_retries, "retries for attempts lost with a worker")->capture_default_str();
  app.add_option("--cancel-grace-ms", config.cancel_grace_ms, "SIGTERM-to-SIGKILL grace on cancel")->capture_default_str();
  app.add_option("--rendezvous-port-base", config.rendezvous_port_base, "first port for gang rendezvous")->capture_default_str();
  app.add_option("--rendezvous-port-span", config.rendezvous_port_span, "ports used for gang rendezvous")->capture_default_str();
  app.add_option("--slurm-autoscale", config.slurm_autoscale,
                 "YAML of autoscaler settings: submit SLURM allocations of workers when ready jobs wait")
      ->check(CLI::ExistingFile);
  app.add_option("--http", config.http,
                 "HTTP endpoint ADDR:PORT for /metrics, /api/v1 and the dashboard (port 0: any; \"\": none); default: "
                 "the one recorded in the home, else 127.0.0.1:0");
  app.add_option("--dashboard", config.dashboard_dir, "the built dashboard (default: <this binary's folder>/dashboard)");
  bool endpoint_given = false, http_given = false;
  app.callback([&] {
    endpoint_given = app.count("--endpoint") > 0;
    http_given = app.count("--http") > 0;
  });
  CLI11_PARSE(app, argc, argv);
  config.home = dd2::ResolveHome(home);
  if (!endpoint_given) {
    // Restart on the same home: keep the endpoint workers and clients already know.
    if (auto recorded = dd2::ReadEndpoint(config.home); recorded.ok()) config.endpoint = *recorded;
  }
  if (!http_given) {  // and the dashboard's URL
    if (auto recorded = dd2::ReadHttpAddress(config.home); recorded.ok()) config.http = *recorded;
  }
  // One TCP connection per worker and client: lift the descriptor limit to the hard maximum.
  rlimit files{};
  if (::getrlimit(RLIMIT_NOFILE, &files) == 0 && files.rlim_cur < files.rlim_max) {
    files.rlim_cur = files.rlim_max;
    ::setrlimit(RLIMIT_NOFILE, &files);
  }
  dd2::CoordinatorServer server(config);
  g_server = &server;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGPIPE, SIG_IGN);
  absl::Status st = server.Run();
  if (!st.ok()) {
    std::fprintf(stderr, "dd2-coordinator: %s\n", std::string(st.message()).c_str());
    return st.code() == absl::StatusCode::kInvalidArgument ? 2 : 1;
  }
  return 0;
}
