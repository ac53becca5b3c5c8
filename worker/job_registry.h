// Job-type registry: the implementations the worker's job child runs, by type name. The
// parameter table lives in common/job_types.h; each implementation receives its params already
// validated and filled with defaults. DD2 job types register here from their own target.
// Registration happens at static-initialisation time; lookups afterwards are read-only.
#ifndef DD2_WORKER_JOB_REGISTRY_H_
#define DD2_WORKER_JOB_REGISTRY_H_

#include <cstdint>
#include <functional>
#include <map>
#include <string>

#include <nlohmann/json.hpp>

namespace dd2 {

// The exit code of a job that stopped on request after checkpointing (cancel or preemption).
inline constexpr int kStoppedExitCode = 143;

// This attempt's place in its gang (DESIGN.md, Gangs) and its worker's device. world_size 1: no
// collectives.
struct GangPlace {
  int rank = 0;
  int world_size = 1;
  std::string rendezvous;        // tcp://HOST:PORT of rank 0's store
  std::string host = "127.0.0.1";  // where this rank's collectives listen
  // The worker's device, for jobs whose `device` param is auto: "cpu", "cuda:N", or "auto"
  // (no worker said: cuda when this LibTorch sees a GPU).
  std::string device = "auto";
};

// What a running job may use. Lives in the job child process.
class JobContext {
 public:
  // `inputs`: upstream jobs of this run that were reused, job name -> "<run id>/<job name>"
  // relative to the artifacts root (run_dir's parent) where their outputs are.
  JobContext(nlohmann::json params, std::string attempt_id, int attempt, std::string work_dir,
             std::string run_dir, std::string job_name, int progress_fd, GangPlace gang = {},
             std::map<std::string, std::string> inputs = {});
  const nlohmann::json& params() const { return params_; }
  const std::string& attempt_id() const { return attempt_id_; }
  int attempt() const { return attempt_; }
  const std::string& work_dir() const { return work_dir_; }
  // Artifacts: every job of a run writes under <run_dir>/<job name>/ (a shared file system on
  // a cluster); upstream outputs are found there by job name, or, for an upstream job that
  // reused an identical job's outputs, in that job's folder.
  const std::string& run_dir() const { return run_dir_; }
  std::string out_dir() const { return run_dir_ + "/" + job_name_; }
  std::string ArtifactDir(const std::string& job_name) const;
  // Sends step/total and metrics to the worker daemon, which forwards them to the coordinator.
  void ReportProgress(uint64_t step, uint64_t total, const std::map<std::string, double>& metrics);
  // One event line for the worker daemon: {"event": kind, ...fields}. Kinds it forwards:
  // "checkpoint" (step, path, sha256, bytes, metrics), "resumed" (step), "cause" (cause).
  void ReportEvent(const std::string& kind, nlohmann::json fields);
  // True once the worker asked the job to stop (SIGTERM: cancel, shutdown or preemption).
  bool StopRequested() const;
  const GangPlace& gang() const { return gang_; }

 private:
  nlohmann::json params_;
  std::string attempt_id_;
  int attempt_;
  std::string work_dir_;
  std::string run_dir_;
  std::string job_name_;
  int progress_fd_;
  GangPlace gang_;
  std::map<std::string, std::string> inputs_;
};

// Returns the process exit code: 0 for success.
using JobFn = std::function<int(JobContext&)>;

// Registers `fn` under `type`.
void RegisterJobType(const std::string& type, JobFn fn);
// Registers the job types this binary ships (today: `sleep`). Idempotent.
void RegisterBuiltinJobTypes();
// One registration function per job-type source file.
void RegisterSleepJobType();
const JobFn* FindJobImpl(const std::string& type);

// The job child's entry point: runs one attempt and returns its exit code.
// An exception escaping the job is reported as the attempt's cause and gives exit code 1. On
// success rank 0 writes the outputs manifest (common/job_outputs.h) and reports it ("outputs").
int RunJobChild(const std::string& type, const std::string& params_json, const std::string& attempt_id,
                int attempt, const std::string& work_dir, const std::string& run_dir,
                const std::string& job_name, int progress_fd, const GangPlace& gang = {},
                const std::map<std::string, std::string>& inputs = {});

// The job child's command line (`<binary> job-run ...`): parses it and calls RunJobChild.
// Shared by dd2-worker and dd2-train.
int JobRunMain(int argc, char** argv);

}  // namespace dd2

#endif  // DD2_WORKER_JOB_REGISTRY_H_
