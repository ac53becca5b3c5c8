// WorkerAgent: the dd2-worker daemon's loop thread. It owns the DEALER to the coordinator
// (routing id = worker id), registers with Hello (reporting the attempts it still holds, so a
// restarted coordinator can reattach them), heartbeats, starts each assigned attempt as a
// supervised child process (`dd2-worker job-run ...`, own process group), forwards the child's
// output (LogChunk) and progress lines (Progress), and reports its exit (AttemptFinished),
// resending the report until the coordinator acknowledges it. Cancel: SIGTERM to the child's
// group, SIGKILL after the grace. Preemption (Preempt(), or Stop() while attempts run): every
// child is asked to checkpoint and stop (SIGTERM), and its exit is reported as "preempted";
// after Stop() the daemon exits once those reports are acknowledged or the grace has passed.
// Under SLURM the reports carry SLURM's reason (`slurm timeout`, `slurm cancelled`, ...), and a
// worker idle past idle_exit_ms drains and exits so that its allocation ends.
// Checkpoint commits and resumes that the child reports on its event lines are forwarded.
// Not thread-safe: Run() and everything else on one thread; Stop() and Preempt() only set
// flags and may be called from a signal handler.
#ifndef DD2_WORKER_AGENT_H_
#define DD2_WORKER_AGENT_H_

#include <atomic>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <optional>
#include <string>

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include "absl/status/status.h"
#include "common/curve_keys.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

struct WorkerConfig {
  std::string coordinator;          // ZeroMQ endpoint
  std::string worker_id;            // stable across restarts of this worker
  std::string advertise_host;       // where gang peers reach this worker (default: hostname)
  std::string device = "cpu";
  int device_index = 0;
  int slots = 1;
  int threads = 0;                  // OMP_NUM_THREADS for each job child; 0: inherit (dd2-train then uses 1)
  std::string work_dir;             // attempt logs and scratch space
  std::string artifacts_root;       // job outputs: <root>/<run id>/<job name>/
  int64_t heartbeat_interval_ms = 1000;  // until the coordinator's Welcome says otherwise
  int64_t heartbeat_liveness = 3;
  int64_t shutdown_grace_ms = 3000;
  int64_t idle_exit_ms = 0;         // registered and idle this long: drain and exit (0: never)
  // Inside a SLURM allocation (--slurm; job_id set): the task's environment, reported in Hello.
  // Then a preemption (USR1) also drains and exits, and every attempt SLURM ends gets a
  // `slurm ...` cause from the allocation's state (ClassifySlurmEnding).
  proto::SlurmTask slurm;
  int64_t slurm_grace_s = 120;      // the USR1 lead before the time limit (--signal=B:USR1@N)
  std::optional<CurveClientKeys> curve;  // a keyed coordinator: this worker's key (role worker)
};

class WorkerAgent {
 public:
  explicit WorkerAgent(WorkerConfig config);
  absl::Status Run();
  void Stop() { stop_ = true; }
  void Preempt() { preempt_ = true; }

 private:
  struct Child {
    std::string attempt_id;
    int pid = -1;
    int out_fd = -1;        // child's stdout+stderr
    int progress_fd = -1;   // JSON lines
    uint64_t log_offset = 0;
    std::shared_ptr<std::ofstream> log;  // the attempt's local log copy, open while it runs
    std::string progress_buf;
    int64_t kill_at_ms = 0; // SIGKILL deadline after a cancel; 0: none
    bool cancelled = false;
    bool preempted = false; // asked to checkpoint and stop by preemption
    std::string ending_cause;       // SLURM's reason for the preemption ("" outside SLURM)
    bool ending_lost = false;       // and whether it counts as lost (scancel, node failure)
    bool fenced = false;    // the coordinator no longer owns it: do not report
    std::string cause;      // from the child's "cause" event line
    std::string outputs_path, outputs_sha256;  // from its "outputs" event line (success)
  };

  void Send(proto::Envelope env);
  void SendHello();
  void HandleMessage(const proto::Envelope& env);
  void StartAttempt(const proto::Assign& assign);
  // Records an attempt that could not start as failed with `cause`.
  void FailToStart(const std::string& attempt_id, const std::string& cause);
  void CancelChild(const std::string& attempt_id, int64_t grace_ms, bool fenced);
  void DrainOutput(Child& c);
  void DrainProgress(Child& c);
  // Asks every child to checkpoint and stop; `grace_signal`: USR1 rather than SIGTERM (the
  // SLURM cause differs).
  void PreemptChildren(bool grace_signal);
  void SendHeartbeat();
  // Adds the numeric members of a JSON object as Metric entries.
  static void AddMetrics(const nlohmann::json& metrics, google::protobuf::RepeatedPtrField<proto::Metric>* out);
  void ReapChildren();
  // Sends every unacknowledged checkpoint report, then every unacknowledged finished report.
  void ResendUnacked();

  WorkerConfig config_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> preempt_{false};
  zmq::context_t context_;
  zmq::socket_t socket_;
  zmq::socket_t handshakes_;       // socket_'s failed handshakes, logged when the reason changes
  std::string handshake_failure_;
  std::map<std::string, Child> children_;
  std::map<std::string, proto::AttemptFinished> unacked_;  // resent until FinishedAck
  // Checkpoint reports by (attempt, step), resent until CheckpointAck.
  std::map<std::pair<std::string, uint64_t>, proto::CheckpointCommitted> unacked_checkpoints_;
  bool registered_ = false;
  bool draining_ = false;   // after Stop(): no new attempts; heartbeats say so
  int64_t last_heard_ms_ = 0;
  int64_t next_heartbeat_ms_ = 0;
  int64_t idle_since_ms_ = 0;  // when the worker last held no attempt and no unsent report
  uint64_t next_request_id_ = 1;
};

}  // namespace dd2

#endif  // DD2_WORKER_AGENT_H_
