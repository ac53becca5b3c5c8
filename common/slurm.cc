#include "common/slurm.h"

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_replace.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "common/process.h"
#include "common/slurm_template.h"

namespace dd2 {

absl::Status ValidateLaunchSpec(const SlurmLaunchSpec& s) {
  if (s.nodes < 1 || s.nodes > 4096) return absl::InvalidArgumentError("--nodes must be in [1, 4096]");
  if (s.workers_per_node < 1 || s.workers_per_node > 64) {
    return absl::InvalidArgumentError("--gpus-per-node must be in [1, 64]");
  }
  if (s.device != "cuda" && s.device != "cpu") return absl::InvalidArgumentError("--device must be cuda or cpu");
  if (s.grace_s < 0 || s.threads < 0 || s.idle_exit_s < 0) {
    return absl::InvalidArgumentError("--grace-s, --threads and --idle-exit-s must be >= 0");
  }
  if (s.coordinator.empty()) return absl::InvalidArgumentError("no coordinator endpoint for the workers");
  if (s.home.empty() || s.home[0] != '/') {
    return absl::InvalidArgumentError("the storage root (--home) must be an absolute path on storage every node sees");
  }
  if (s.worker_binary.empty() || s.worker_binary[0] != '/') {
    return absl::InvalidArgumentError("the dd2-worker path must be absolute");
  }
  std::vector<std::pair<std::string, std::string>> values = {
      {"--partition", s.partition}, {"--time", s.time_limit}, {"--account", s.account},
      {"coordinator endpoint", s.coordinator}, {"--home", s.home}, {"dd2-worker path", s.worker_binary},
      {"job name", s.job_name}};
  for (const auto& a : s.sbatch_args) values.push_back({"--sbatch-arg", a});
  for (const auto& [name, v] : values) {
    if (v.find_first_of("\n\r'\"`$\\") != std::string::npos) {
      return absl::InvalidArgumentError(absl::StrCat(name, " '", v, "' contains a quote, $, backslash or newline"));
    }
  }
  for (const auto& a : s.sbatch_args) {
    if (!absl::StartsWith(a, "-")) {
      return absl::InvalidArgumentError(absl::StrCat("--sbatch-arg '", a, "' is not an sbatch option (--name=value)"));
    }
  }
  return absl::OkStatus();
}

std::string RenderSbatchScript(const SlurmLaunchSpec& s) {
  std::vector<std::string> lines;
  if (s.device == "cuda") lines.push_back(absl::StrCat("#SBATCH --gpus-per-node=", s.workers_per_node));
  if (!s.partition.empty()) lines.push_back("#SBATCH --partition=" + s.partition);
  if (!s.time_limit.empty()) lines.push_back("#SBATCH --time=" + s.time_limit);
  if (!s.account.empty()) lines.push_back("#SBATCH --account=" + s.account);
  for (const auto& a : s.sbatch_args) lines.push_back("#SBATCH " + a);
  return absl::StrReplaceAll(kSlurmWorkersTemplate, {{"{{job_name}}", s.job_name},
                                                     {"{{nodes}}", absl::StrCat(s.nodes)},
                                                     {"{{workers_per_node}}", absl::StrCat(s.workers_per_node)},
                                                     {"{{grace_s}}", absl::StrCat(s.grace_s)},
                                                     {"{{home}}", s.home},
                                                     {"{{sbatch_lines}}", absl::StrJoin(lines, "\n")},
                                                     {"{{worker}}", s.worker_binary},
                                                     {"{{coordinator}}", s.coordinator},
                                                     {"{{device}}", s.device},
                                                     {"{{threads}}", absl::StrCat(s.threads)},
                                                     {"{{idle_exit_s}}", absl::StrCat(s.idle_exit_s)}});
}

std::optional<int64_t> ParseSlurmDuration(const std::string& text) {
  if (text == "UNLIMITED" || text == "INFINITE" || text == "Partition_Limit") return -1;
  int64_t days = 0;
  std::string rest = text;
  if (auto dash = text.find('-'); dash != std::string::npos) {
    if (!absl::SimpleAtoi(text.substr(0, dash), &days)) return std::nullopt;
    rest = text.substr(dash + 1);
  }
  std::vector<std::string> parts = absl::StrSplit(rest, ':');
  std::vector<int64_t> v;
  for (const auto& p : parts) {
    int64_t x = 0;
    if (!absl::SimpleAtoi(p, &x) || x < 0) return std::nullopt;
    v.push_back(x);
  }
  const bool has_days = rest.size() != text.size();
  int64_t h = 0, m = 0, sec = 0;
  if (has_days) {  // D-HH, D-HH:MM, D-HH:MM:SS
    if (v.empty() || v.size() > 3) return std::nullopt;
    h = v[0];
    if (v.size() > 1) m = v[1];
    if (v.size() > 2) sec = v[2];
  } else if (v.size() == 1) {  // MM
    m = v[0];
  } else if (v.size() == 2) {  // MM:SS
    m = v[0];
    sec = v[1];
  } else if (v.size() == 3) {
    h = v[0];
    m = v[1];
    sec = v[2];
  } else {
    return std::nullopt;
  }
  return ((days * 24 + h) * 60 + m) * 60 + sec;
}

std::map<std::string, SlurmJobInfo> ParseScontrolJobs(const std::string& text) {
  std::map<std::string, SlurmJobInfo> jobs;
  for (absl::string_view line : absl::StrSplit(text, '\n', absl::SkipWhitespace())) {
    std::string id;
    SlurmJobInfo info;
    for (absl::string_view field : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
      const auto eq = field.find('=');
      if (eq == absl::string_view::npos) continue;
      const std::string key(field.substr(0, eq));
      const std::string value(field.substr(eq + 1));
      if (key == "JobId") id = value;
      if (key == "JobName") info.name = value;
      if (key == "JobState") info.state = value;
      if (key == "Reason") info.reason = value;
      if (key == "Restarts") (void)absl::SimpleAtoi(value, &info.restarts);
      if (key == "RunTime") info.run_time_s = ParseSlurmDuration(value).value_or(0);
      if (key == "TimeLimit") info.time_limit_s = ParseSlurmDuration(value).value_or(-1);
    }
    if (!id.empty() && !info.state.empty()) jobs[id] = info;
  }
  return jobs;
}

bool IsTransientSbatchError(const std::string& message) {
  static const char* kTransient[] = {"Socket timed out",      "Resource temporarily unavailable",
                                     "Unable to contact slurm controller", "slurm_persist_conn",
                                     "Connection refused",    "Zero Bytes were transmitted",
                                     "busy",                  "try again"};
  const std::string lower = absl::AsciiStrToLower(message);
  for (const char* t : kTransient) {
    if (absl::StrContains(lower, absl::AsciiStrToLower(t))) return true;
  }
  return false;
}

bool IsFinalSlurmState(const std::string& state) {
  static const char* kFinal[] = {"COMPLETED", "CANCELLED", "FAILED",   "TIMEOUT",       "NODE_FAIL",
                                 "PREEMPTED", "BOOT_FAIL", "DEADLINE", "OUT_OF_MEMORY", "ended"};
  for (const char* f : kFinal) {
    if (state == f) return true;
  }
  return false;
}

namespace {

std::string Words(const CommandResult& r) {
  std::string words(absl::StripAsciiWhitespace(r.err.empty() ? r.out : r.err));
  return words.empty() ? absl::StrCat("exit code ", r.exit_code) : words;
}

class ShellSlurmCommands : public SlurmCommands {
 public:
  explicit ShellSlurmCommands(int64_t timeout_ms) : timeout_ms_(timeout_ms) {}

  absl::StatusOr<std::string> Submit(const std::string& script) override {
    auto r = RunCommand({"sbatch", "--parsable"}, script, timeout_ms_);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat("sbatch: ", r.status().message()));
    if (r->exit_code != 0) return absl::UnavailableError(absl::StrCat("sbatch: ", Words(*r)));
    // --parsable prints "jobid" or "jobid;cluster".
    std::string id(absl::StripAsciiWhitespace(r->out));
    id = id.substr(0, id.find(';'));
    int64_t n = 0;
    if (!absl::SimpleAtoi(id, &n)) {
      return absl::InternalError(absl::StrCat("sbatch: unexpected answer '", r->out, "'"));
    }
    return id;
  }

  absl::StatusOr<std::map<std::string, SlurmJobInfo>> Query(const std::string& job_id) override {
    std::vector<std::string> argv = {"scontrol", "show", "job", "-o"};
    if (!job_id.empty()) argv.push_back(job_id);
    auto r = RunCommand(argv, "", timeout_ms_);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat("scontrol: ", r.status().message()));
    if (r->exit_code != 0) {
      if (absl::StrContains(r->out + r->err, "No jobs in the system")) return std::map<std::string, SlurmJobInfo>{};
      return absl::UnavailableError(absl::StrCat("scontrol show job: ", Words(*r)));
    }
    return ParseScontrolJobs(r->out);
  }

  absl::StatusOr<std::string> FinalState(const std::string& job_id) override {
    auto r = RunCommand({"sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"}, "", timeout_ms_);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat("sacct: ", r.status().message()));
    // "CANCELLED by 0" -> "CANCELLED"; nothing printed: accounting knows nothing.
    std::string state(absl::StripAsciiWhitespace(r->out));
    state = state.substr(0, state.find_first_of(" \n"));
    if (r->exit_code != 0 || state.empty()) return absl::NotFoundError(absl::StrCat("sacct knows no job ", job_id));
    return state;
  }

  absl::Status Cancel(const std::string& job_id) override {
    auto r = RunCommand({"scancel", job_id}, "", timeout_ms_);
    if (!r.ok()) return absl::Status(r.status().code(), absl::StrCat("scancel: ", r.status().message()));
    if (r->exit_code != 0) return absl::UnavailableError(absl::StrCat("scancel ", job_id, ": ", Words(*r)));
    return absl::OkStatus();
  }

 private:
  int64_t timeout_ms_;
};

}  // namespace

std::unique_ptr<SlurmCommands> NewShellSlurmCommands(int64_t timeout_ms) {
  return std::make_unique<ShellSlurmCommands>(timeout_ms);
}

absl::StatusOr<std::string> SubmitWithRetry(SlurmCommands& slurm, const std::string& script, int attempts,
                                            int64_t backoff_ms, const std::function<void(int64_t)>& sleep_ms,
                                            const std::function<void(const std::string&)>& on_retry) {
  absl::Status last;
  for (int i = 0; i < std::max(1, attempts); ++i) {
    auto id = slurm.Submit(script);
    if (id.ok()) return id;
    last = id.status();
    if (!IsTransientSbatchError(std::string(last.message())) || i + 1 >= attempts) break;
    if (on_retry) on_retry(absl::StrCat(last.message(), "; retrying in ", backoff_ms, " ms"));
    sleep_ms(backoff_ms);
    backoff_ms *= 2;
  }
  return last;
}

proto::SlurmTask SlurmTaskFromEnv(const std::function<const char*(const char*)>& getenv) {
  proto::SlurmTask t;
  auto str = [&](const char* name) {
    const char* v = getenv(name);
    return std::string(v ? v : "");
  };
  auto num = [&](const char* name, int fallback) {
    int x = fallback;
    return absl::SimpleAtoi(str(name), &x) ? x : fallback;
  };
  t.set_job_id(str("SLURM_JOB_ID"));
  if (t.job_id().empty()) return t;
  t.set_procid(num("SLURM_PROCID", 0));
  t.set_localid(num("SLURM_LOCALID", 0));
  t.set_restart_count(num("SLURM_RESTART_COUNT", 0));
  t.set_node(str("SLURMD_NODENAME"));
  return t;
}

int SlurmDeviceIndex(const proto::SlurmTask& task, const char* cuda_visible_devices) {
  if (cuda_visible_devices != nullptr) {
    std::vector<std::string> gpus = absl::StrSplit(cuda_visible_devices, ',', absl::SkipEmpty());
    if (gpus.size() == 1) return 0;
  }
  return task.localid();
}

SlurmEnding ClassifySlurmEnding(const std::optional<SlurmJobInfo>& info, int start_restarts, bool grace_signal,
                                int64_t grace_s) {
  if (grace_signal) {
    // USR1 comes `grace_s` before the time limit (--signal=B:USR1@grace); anything else that
    // sends it (a preemption grace, an admin's scancel --signal=USR1) is a preemption.
    const bool near_limit = info && info->time_limit_s > 0 && info->time_limit_s - info->run_time_s <= grace_s + 60;
    return {near_limit ? "slurm timeout" : "slurm preempted", true};
  }
  if (!info) return {"slurm preempted (allocation ending; scontrol did not answer)", true};
  if (info->restarts > start_restarts || info->state == "REQUEUED" || info->state == "PENDING") {
    return {"slurm preempted (requeued)", true};
  }
  if (info->state == "TIMEOUT" || info->reason == "TimeLimit") return {"slurm timeout", true};
  if (info->state == "PREEMPTED" || absl::StrContains(info->reason, "Preempt")) return {"slurm preempted", true};
  if (info->state == "NODE_FAIL" || info->reason == "NodeDown" || info->reason == "NodeFail") {
    return {"slurm node fail", false};
  }
  return {"slurm cancelled", false};
}

}  // namespace dd2
