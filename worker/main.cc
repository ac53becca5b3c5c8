// dd2-worker: `dd2-worker [flags]` runs the daemon; `dd2-worker job-run ...` is the job child
// the daemon starts for each attempt (not for direct use). SIGUSR1 preempts the running attempts
// (checkpoint, report "preempted", keep serving; with --slurm, then exit); SIGTERM/SIGINT preempt
// them and exit.
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "common/curve_keys.h"
#include "common/home.h"
#include "common/slurm.h"
#include "worker/agent.h"
#include "worker/job_registry.h"

namespace {
dd2::WorkerAgent* g_agent = nullptr;
void OnSignal(int) {
  if (g_agent) g_agent->Stop();
}
void OnPreempt(int) {
  if (g_agent) g_agent->Preempt();
}
}  // namespace

int main(int argc, char** argv) {
  if (argc > 1 && std::string(argv[1]) == "job-run") return dd2::JobRunMain(argc - 1, argv + 1);

  dd2::WorkerConfig config;
  std::string home;
  CLI::App app{"dd2-worker: runs dd2 job attempts for a coordinator"};
  app.add_option("--coordinator", config.coordinator, "coordinator endpoint (default: the one in the home)");
  app.add_option("--home", home, "dd2 home to read the endpoint from (default $DD2_HOME or ./.dd2)");
  app.add_option("--id", config.worker_id, "stable worker id (default: <host>-<pid>)");
  app.add_option("--device", config.device, "cpu or cuda")->check(CLI::IsMember({"cpu", "cuda"}))->capture_default_str();
  app.add_option("--device-index", config.device_index, "GPU index")->capture_default_str();
  app.add_option("--slots", config.slots, "attempts run at once")->check(CLI::Range(1, 1024))->capture_default_str();
  app.add_option("--threads", config.threads,
                 "intra-op threads per job (sets OMP_NUM_THREADS for job children; 0: inherit)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  app.add_option("--work-dir", config.work_dir, "scratch and attempt logs (default <home>/workers/<id>)");
  app.add_option("--artifacts", config.artifacts_root,
                 "where jobs write their outputs, <root>/<run>/<job>; shared by all workers (default <home>/artifacts)");
  app.add_option("--advertise-host", config.advertise_host,
                 "address gang peers reach this worker at (default: the hostname)");
  app.add_option("--heartbeat-interval-ms", config.heartbeat_interval_ms, "until the coordinator sets it")->capture_default_str();
  app.add_option("--shutdown-grace-ms", config.shutdown_grace_ms,
                 "after SIGTERM, how long preempted jobs get to checkpoint and report (default 3000; 25000 with --slurm)");
  int64_t idle_exit_s = 0;
  app.add_option("--idle-exit-s", idle_exit_s, "exit after this long without work (0: never)")
      ->check(CLI::NonNegativeNumber)
      ->capture_default_str();
  std::string curve_secret, coordinator_key;
  app.add_option("--curve-secret", curve_secret,
                 "this worker's CURVE key file (role worker); default <home>/keys/worker.key when the home is keyed");
  app.add_option("--coordinator-key", coordinator_key,
                 "the coordinator's public key file; default <home>/keys/coordinator.pub when the home is keyed");
  bool slurm = false;
  app.add_flag("--slurm", slurm,
               "a task of a SLURM allocation: id slurm-<job>-<rank>, the GPU from SLURM_LOCALID, SLURM's reasons as "
               "causes, and exit after a preemption (USR1)");
  app.add_option("--slurm-grace-s", config.slurm_grace_s, "the --signal=B:USR1@N lead before the time limit")
      ->capture_default_str();
  CLI11_PARSE(app, argc, argv);
  config.idle_exit_ms = idle_exit_s * 1000;
  if (slurm) {
    config.slurm = dd2::SlurmTaskFromEnv([](const char* name) { return std::getenv(name); });
    if (config.slurm.job_id().empty()) {
      std::fprintf(stderr, "dd2-worker: --slurm outside a SLURM allocation (SLURM_JOB_ID is not set)\n");
      return 2;
    }
    if (app.count("--shutdown-grace-ms") == 0) config.shutdown_grace_ms = 25000;
    if (config.worker_id.empty()) {
      config.worker_id = "slurm-" + config.slurm.job_id() + "-" + std::to_string(config.slurm.procid());
    }
    if (config.device == "cuda" && app.count("--device-index") == 0) {
      config.device_index = dd2::SlurmDeviceIndex(config.slurm, std::getenv("CUDA_VISIBLE_DEVICES"));
    }
  }
  const std::string resolved_home = dd2::ResolveHome(home);
  if (config.coordinator.empty()) {
    auto ep = dd2::ReadEndpoint(resolved_home);
    if (!ep.ok()) {
      std::fprintf(stderr, "dd2-worker: %s\n", std::string(ep.status().message()).c_str());
      return 4;
    }
    config.coordinator = *ep;
  }
  const dd2::KeyedHomePaths keyed = dd2::KeyedHome(resolved_home);
  auto keys = dd2::ClientKeys(curve_secret, coordinator_key, keyed.worker_key, keyed.coordinator_pub);
  if (!keys.ok()) {
    std::fprintf(stderr, "dd2-worker: %s\n", std::string(keys.status().message()).c_str());
    return 2;
  }
  if (*keys && (*keys)->own.role != dd2::Role::kWorker) {
    std::fprintf(stderr, "dd2-worker: the key has role %s; a worker needs a key made with --role worker\n",
                 dd2::RoleName((*keys)->own.role).c_str());
    return 2;
  }
  config.curve = *keys;
  char host[256] = {0};
  ::gethostname(host, sizeof(host) - 1);
  if (config.worker_id.empty()) config.worker_id = std::string(host) + "-" + std::to_string(::getpid());
  if (config.advertise_host.empty()) config.advertise_host = host;
  if (config.work_dir.empty()) config.work_dir = resolved_home + "/workers/" + config.worker_id;
  if (config.artifacts_root.empty()) config.artifacts_root = resolved_home + "/artifacts";
  dd2::WorkerAgent agent(config);
  g_agent = &agent;
  std::signal(SIGTERM, OnSignal);
  std::signal(SIGINT, OnSignal);
  std::signal(SIGUSR1, OnPreempt);  // e.g. SLURM's --signal=USR1@60 before a time limit
  std::signal(SIGPIPE, SIG_IGN);
  std::fprintf(stderr, "dd2-worker: %s connecting to %s\n", config.worker_id.c_str(), config.coordinator.c_str());
  absl::Status st = agent.Run();
  if (!st.ok()) {
    std::fprintf(stderr, "dd2-worker: %s\n", std::string(st.message()).c_str());
    return 1;
  }
  return 0;
}
