// CoordinatorService: the coordinator's state machine. It decodes frames, validates them,
// commits each transition to the JobStore before acting on it (sending), schedules ready jobs,
// and runs heartbeat liveness, retry backoff and cancellation. It owns no socket: replies and
// commands leave through the `send` callback, so tests drive it with a FakeClock and an
// in-memory store. Never throws; a malformed frame is counted and dropped.
// Not thread-safe: call only from the coordinator loop thread.
#ifndef DD2_COORDINATOR_COORDINATOR_SERVICE_H_
#define DD2_COORDINATOR_COORDINATOR_SERVICE_H_

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "common/clock.h"
#include "coordinator/config.h"
#include "coordinator/job_store.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

class CoordinatorService {
 public:
  // `peer` is the ROUTER routing id the message goes to.
  using SendFn = std::function<void(const std::string& peer, const proto::Envelope& env)>;

  CoordinatorService(CoordinatorConfig config, JobStore* store, const Clock* clock, SendFn send);

  // Loads every run, job, attempt and worker from the store. Call once, before any frame.
  // Workers recorded as alive get lost_after_ms from now to re-register and reattach.
  absl::Status Recover();

  // One frame from `peer`. Malformed frames are counted (MalformedFrames) and dropped.
  void HandleFrame(const std::string& peer, std::string_view frame);

  // Places ready jobs on free workers if anything changed since the last call. The loop calls
  // it once per batch of frames, so a burst of N reports costs one scheduling pass.
  void Schedule();

  // Liveness, retry backoff and scheduling; call at least every heartbeat interval.
  void Tick();

  // The endpoint reported by `status`.
  void SetEndpoint(std::string endpoint) { endpoint_ = std::move(endpoint); }

  bool shutdown_requested() const { return shutdown_requested_; }
  int64_t frames() const { return frames_; }
  int64_t malformed_frames() const { return malformed_frames_; }
  int64_t send_failures() const { return send_failures_; }
  // A send to `peer` failed; `gone`: its connection is closed. A worker whose connection is gone
  // is marked lost at the next Schedule or Tick, so no gang waits on a dead rank.
  void CountSendFailure(const std::string& peer, bool gone);

 private:
  class Staged;
  struct WorkerLive {
    std::string peer;       // empty until the worker says Hello to this process
    int64_t last_seen_ms = 0;
  };

  // Handlers: each returns the status sent back to the peer on failure.
  absl::Status HandleHello(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleHeartbeat(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleAttemptStarted(const proto::Envelope& env);
  absl::Status HandleProgress(const proto::Envelope& env);
  absl::Status HandleLogChunk(const proto::Envelope& env);
  absl::Status HandleAttemptFinished(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleCheckpointCommitted(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleAttemptResumed(const proto::Envelope& env);
  absl::Status HandleCheckpoints(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleSubmit(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleStatus(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleJobs(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleLogs(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleCancel(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleWorkers(const std::string& peer, const proto::Envelope& env);

  // Commits `staged` and, only when that succeeds, folds it into memory and sends its outbox.
  absl::Status Commit(Staged& staged);
  // Folds staged records into the in-memory maps and indexes.
  void Fold(const Staged& staged);
  // Indexes a run's jobs: spec order, position, and who waits on whom.
  void IndexRunJobs(const std::string& run_id, const proto::RunSpec& spec);
  void ScheduleReady();
  void AddDynamicJobIndex(const JobRecord& job);
  // Stages an eval job for checkpoint `step` of `job` when its eval_every asks for one, and
  // returns its id ("" when none); index it with AddDynamicJobIndex once committed.
  std::string MaybeAddCheckpointEval(Staged& s, const JobRecord& job, int64_t step);
  // Stages the retention policy of `job_id`: victims move to "deleting" (journaled). Returns
  // them; after the commit, FinishDeletions removes their files and records them deleted.
  std::vector<CheckpointRecord> StageRetention(Staged& s, const std::string& job_id);
  // StageRetention, its commit and the deletions, for one job.
  absl::Status ApplyRetention(const std::string& job_id);
  // (generator job name, step) when `job` evaluates a committed checkpoint.
  static std::optional<std::pair<std::string, int64_t>> CheckpointEvalTarget(const JobRecord& job);
  void FinishDeletions(const std::vector<CheckpointRecord>& victims);
  void MarkUnreachableWorkersLost();
  void MarkLost(const std::string& worker_id, const std::string& cause);
  // Stages a failed or lost attempt's consequence for its job: retry with backoff, or fail.
  void RetryOrFail(Staged& s, const std::string& job_id, const std::string& cause, bool infra);
  // Moves pending jobs waiting on `job_id` to ready when all their dependencies succeeded.
  void PromoteDependents(Staged& s, const std::string& job_id);
  // Cancels every pending job downstream of `job_id`.
  void CancelDownstream(Staged& s, const std::string& job_id, const std::string& why);
  void FinishRunIfDone(Staged& s, const std::string& run_id);
  std::vector<std::string> ActiveAttemptsOf(const std::string& worker_id) const;
  std::string LogPath(const std::string& attempt_id) const;
  void Reply(const std::string& peer, const proto::Envelope& request, proto::Envelope reply);
  proto::Envelope CancelAttemptMessage(const std::string& attempt_id) const;
  void Event(Staged& s, const std::string& kind, const std::string& run_id,
             const std::string& job_id, const std::string& attempt_id, const std::string& detail);

  CoordinatorConfig config_;
  JobStore* store_;
  const Clock* clock_;
  SendFn send_;
  std::string endpoint_;
  int64_t started_ms_ = 0;
  int64_t next_seq_ = 1;
  bool shutdown_requested_ = false;
  bool dirty_ = true;  // something changed that may allow a placement
  int64_t frames_ = 0;
  int64_t malformed_frames_ = 0;
  int64_t send_failures_ = 0;

  std::map<std::string, RunRecord> runs_;
  std::map<std::string, JobRecord> jobs_;
  std::map<std::string, AttemptRecord> attempts_;
  std::map<std::string, WorkerRecord> workers_;
  std::map<std::string, WorkerLive> live_;
  std::map<std::string, std::string> run_by_submission_;
  std::map<std::string, std::vector<std::string>> jobs_by_run_;       // in spec order
  std::map<std::string, std::vector<std::string>> attempts_by_job_;   // in number order
  std::map<std::string, int64_t> job_index_;                          // position in its run
  std::map<std::string, std::vector<std::string>> dependents_;        // job -> jobs waiting on it
  std::map<std::string, int64_t> open_jobs_;                          // run -> non-terminal jobs
  std::set<std::string> ready_;                                       // jobs in state ready
  std::set<std::string> active_attempts_;                             // non-terminal
  std::map<std::string, std::map<std::string, double>> latest_metrics_;  // job -> key -> value
  std::map<std::string, std::set<std::string>> finished_ranks_;      // attempt -> workers done
  std::map<std::string, std::map<int64_t, CheckpointRecord>> checkpoints_;  // job -> step -> record
  std::map<std::string, proto::JobSpec> job_specs_;                  // job -> its spec
  std::set<std::string> unreachable_peers_;
  int64_t next_rendezvous_ = 0;
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_COORDINATOR_SERVICE_H_
