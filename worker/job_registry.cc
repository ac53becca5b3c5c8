#include "worker/job_registry.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>
#include <filesystem>

#include <CLI/CLI.hpp>

#include "common/job_outputs.h"

namespace dd2 {
namespace {

volatile std::sig_atomic_t g_stop = 0;
void OnStop(int) { g_stop = 1; }

std::map<std::string, JobFn>& Registry() {
  static auto* r = new std::map<std::string, JobFn>();
  return *r;
}

}  // namespace

JobContext::JobContext(nlohmann::json params, std::string attempt_id, int attempt,
                       std::string work_dir, std::string run_dir, std::string job_name, int progress_fd,
                       GangPlace gang, std::map<std::string, std::string> inputs)
    : params_(std::move(params)),
      attempt_id_(std::move(attempt_id)),
      attempt_(attempt),
      work_dir_(std::move(work_dir)),
      run_dir_(std::move(run_dir)),
      job_name_(std::move(job_name)),
      progress_fd_(progress_fd),
      gang_(std::move(gang)),
      inputs_(std::move(inputs)) {}

std::string JobContext::ArtifactDir(const std::string& job_name) const {
  auto it = inputs_.find(job_name);
  if (it == inputs_.end()) return run_dir_ + "/" + job_name;
  return (std::filesystem::path(run_dir_).parent_path() / it->second).string();
}

namespace {

void WriteLine(int fd, const nlohmann::json& line) {
  if (fd < 0) return;
  std::string text = line.dump() + "\n";
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) return;  // the daemon is gone; keep running, it will be told on reconnect
    done += static_cast<size_t>(n);
  }
}

}  // namespace

void JobContext::ReportProgress(uint64_t step, uint64_t total,
                                const std::map<std::string, double>& metrics) {
  WriteLine(progress_fd_, {{"step", step}, {"total", total}, {"metrics", metrics}});
}

void JobContext::ReportEvent(const std::string& kind, nlohmann::json fields) {
  fields["event"] = kind;
  WriteLine(progress_fd_, fields);
}

bool JobContext::StopRequested() const { return g_stop != 0; }

void RegisterJobType(const std::string& type, JobFn fn) { Registry()[type] = std::move(fn); }

void RegisterBuiltinJobTypes() { RegisterSleepJobType(); }

const JobFn* FindJobImpl(const std::string& type) {
  auto it = Registry().find(type);
  return it == Registry().end() ? nullptr : &it->second;
}

int RunJobChild(const std::string& type, const std::string& params_json, const std::string& attempt_id,
                int attempt, const std::string& work_dir, const std::string& run_dir,
                const std::string& job_name, int progress_fd, const GangPlace& gang,
                const std::map<std::string, std::string>& inputs) {
  std::signal(SIGTERM, OnStop);
  // Under srun, SLURM's USR1 (the grace signal the batch script passes on) reaches every process
  // of the task, this child included: checkpoint and stop, as on the worker's SIGTERM.
  std::signal(SIGUSR1, OnStop);
  RegisterBuiltinJobTypes();
  const JobFn* fn = FindJobImpl(type);
  if (fn == nullptr) {
    std::fprintf(stderr, "dd2 job: this worker has no implementation of job type '%s'\n", type.c_str());
    return 127;
  }
  nlohmann::json params = nlohmann::json::parse(params_json, nullptr, false);
  if (params.is_discarded()) {
    std::fprintf(stderr, "dd2 job: params are not JSON: %s\n", params_json.c_str());
    return 2;
  }
  JobContext ctx(std::move(params), attempt_id, attempt, work_dir, run_dir, job_name, progress_fd, gang, inputs);
  int code = 1;
  try {  // the boundary for exceptions from LibTorch and friends: a clear message, exit 1
    code = (*fn)(ctx);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "dd2 job %s (%s): %s\n", attempt_id.c_str(), type.c_str(), e.what());
    ctx.ReportEvent("cause", {{"cause", std::string(e.what()).substr(0, 500)}});
  }
  if (code == 0 && gang.rank == 0) {
    auto outputs = WriteOutputsManifest(ctx.out_dir());
    if (outputs.ok()) {
      ctx.ReportEvent("outputs", {{"path", outputs->path}, {"sha256", outputs->sha256}});
    } else {  // the job still succeeded; it just cannot be reused
      std::fprintf(stderr, "dd2 job: no outputs manifest: %s\n", std::string(outputs.status().message()).c_str());
    }
  }
  std::fflush(stdout);
  std::fflush(stderr);
  return code;
}

int JobRunMain(int argc, char** argv) {
  CLI::App app{"job-run: one job attempt (started by the worker daemon)"};
  std::string type, params, attempt_id, work_dir = ".", run_dir = ".", job_name = "job", inputs_json = "{}";
  int attempt = 1, progress_fd = -1;
  GangPlace gang;
  app.add_option("--type", type)->required();
  app.add_option("--params", params)->required();
  app.add_option("--attempt-id", attempt_id)->required();
  app.add_option("--attempt", attempt);
  app.add_option("--work-dir", work_dir);
  app.add_option("--run-dir", run_dir);
  app.add_option("--job-name", job_name);
  app.add_option("--progress-fd", progress_fd);
  app.add_option("--inputs", inputs_json, "reused upstream jobs: {job name: \"<run>/<job>\"} under the artifacts root");
  app.add_option("--rank", gang.rank, "this attempt's rank in its gang");
  app.add_option("--world-size", gang.world_size, "ranks in the gang");
  app.add_option("--rendezvous", gang.rendezvous, "tcp://HOST:PORT of rank 0's store");
  app.add_option("--host", gang.host, "address this rank's collectives listen on");
  app.add_option("--device", gang.device, "the worker's device for `device: auto` jobs: cpu, cuda:N or auto");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  }
  std::map<std::string, std::string> inputs;
  nlohmann::json j = nlohmann::json::parse(inputs_json, nullptr, false);
  if (j.is_object()) {
    for (auto& [name, dir] : j.items()) {
      if (dir.is_string()) inputs[name] = dir.get<std::string>();
    }
  }
  return RunJobChild(type, params, attempt_id, attempt, work_dir, run_dir, job_name, progress_fd, gang, inputs);
}

}  // namespace dd2
