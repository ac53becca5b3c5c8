#include "worker/job_registry.h"

#include <unistd.h>

#include <csignal>
#include <cstdio>

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
                       std::string work_dir, int progress_fd)
    : params_(std::move(params)),
      attempt_id_(std::move(attempt_id)),
      attempt_(attempt),
      work_dir_(std::move(work_dir)),
      progress_fd_(progress_fd) {}

void JobContext::ReportProgress(uint64_t step, uint64_t total,
                                const std::map<std::string, double>& metrics) {
  if (progress_fd_ < 0) return;
  nlohmann::json line = {{"step", step}, {"total", total}, {"metrics", metrics}};
  std::string text = line.dump() + "\n";
  size_t done = 0;
  while (done < text.size()) {
    ssize_t n = ::write(progress_fd_, text.data() + done, text.size() - done);
    if (n <= 0) return;  // the daemon is gone; keep running, it will be told on reconnect
    done += static_cast<size_t>(n);
  }
}

bool JobContext::StopRequested() const { return g_stop != 0; }

void RegisterJobType(const std::string& type, JobFn fn) { Registry()[type] = std::move(fn); }

void RegisterBuiltinJobTypes() { RegisterSleepJobType(); }

const JobFn* FindJobImpl(const std::string& type) {
  auto it = Registry().find(type);
  return it == Registry().end() ? nullptr : &it->second;
}

int RunJobChild(const std::string& type, const std::string& params_json, const std::string& attempt_id,
                int attempt, const std::string& work_dir, int progress_fd) {
  std::signal(SIGTERM, OnStop);
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
  JobContext ctx(std::move(params), attempt_id, attempt, work_dir, progress_fd);
  int code = (*fn)(ctx);
  std::fflush(stdout);
  std::fflush(stderr);
  return code;
}

}  // namespace dd2
