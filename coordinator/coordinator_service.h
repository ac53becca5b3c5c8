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
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/status/status.h"
#include "common/clock.h"
#include "common/slurm.h"
#include "coordinator/autoscale.h"
#include "common/curve_keys.h"
#include "coordinator/config.h"
#include "coordinator/job_store.h"
#include "coordinator/loop_stats.h"
#include "coordinator/scheduler.h"
#include "coordinator/snapshot.h"
#include "coordinator/state.h"
#include "coordinator/views.h"
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

  // One frame from `peer`, whose connection has `role` (kLocal on a keyless coordinator; see
  // coordinator/access.h). Malformed frames are counted (malformed_frames) and dropped; a
  // message the role may not send is counted (rejected_frames), answered with PermissionDenied
  // when it is a request, and never reaches a handler.
  void HandleFrame(const std::string& peer, std::string_view frame, Role role = Role::kLocal);
  // Handshakes the ZAP handler refused so far, for `status`.
  void SetRejectedConnections(int64_t n) { rejected_connections_ = n; }
  // Whether peers authenticate with CURVE keys, for `status`.
  void SetKeyed(bool keyed) { keyed_ = keyed; }

  // Places ready jobs on free workers if anything changed since the last call. The loop calls
  // it once per batch of frames, so a burst of N reports costs one scheduling pass.
  void Schedule();

  // Liveness, retry backoff and scheduling; call at least every heartbeat interval.
  void Tick();

  // SLURM: the commands the coordinator runs (polling allocation states; autoscaling) and, with
  // `autoscale`, the autoscaler's settings; `base` carries what every rendered sbatch script
  // needs (coordinator endpoint, storage root, dd2-worker path). Without a call no SLURM command
  // runs: recorded allocations keep the state they were recorded with.
  void SetSlurm(std::unique_ptr<SlurmCommands> slurm, std::optional<AutoscaleConfig> autoscale, SlurmLaunchSpec base);

  // The endpoint reported by `status`.
  void SetEndpoint(std::string endpoint) { endpoint_ = std::move(endpoint); }

  bool shutdown_requested() const { return shutdown_requested_; }
  int64_t frames() const { return frames_; }
  int64_t malformed_frames() const { return malformed_frames_; }
  int64_t send_failures() const { return send_failures_; }
  // Checkpoint and outputs paths refused for lying outside their job's folder.
  int64_t refused_paths() const { return refused_paths_; }
  int64_t rejected_frames() const { return rejected_frames_; }
  int64_t store_errors() const { return store_errors_; }
  // The counters of the status document.
  CoordinatorInfo Info() const;
  // A copy of the state and counters for the HTTP thread (coordinator/snapshot.h), made by
  // bringing an older snapshot nobody holds any more up to date when there is one.
  // Its own duration goes into the loop statistics.
  std::shared_ptr<const CoordinatorSnapshot> MakeSnapshot();
  // A send to `peer` failed; `gone`: its connection is closed. A worker whose connection is gone
  // is marked lost at the next Schedule or Tick, so no gang waits on a dead rank.
  void CountSendFailure(const std::string& peer, bool gone);

 private:
  class Staged;

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
  // sweeps.cc
  absl::Status HandleSweepSubmit(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleSweeps(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleCompare(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleMetrics(const std::string& peer, const proto::Envelope& env);
  // slurm_service.cc
  absl::Status HandleSlurmRecord(const std::string& peer, const proto::Envelope& env);
  absl::Status HandleSlurmList(const std::string& peer, const proto::Envelope& env);
  // Every poll_s: reads SLURM's job states into the allocations (and adopts the job an
  // interrupted autoscaler submission made), then lets the autoscaler act.
  void SlurmTick();
  void PollSlurm();
  void Autoscale();
  // Counts a failed submission and sets the autoscaler's backoff; returns "; next try in N s".
  std::string BackOff();
  // Stops every unfinished job of `run_id` (state stopped) and the attempts they run.
  void StopRun(Staged& s, const std::string& run_id, const std::string& why);
  // Successive halving: decides every rung that can be decided now, committing the decisions
  // together with the stops they cause, before any CancelAttempt is sent.
  void AdvanceHalving();

  // reuse.cc (job memoization)
  // Sets the identity of `run_id`'s jobs (and of `extra`, not yet indexed) that have none.
  void AssignIdentities(Staged& s, const std::string& run_id, const std::vector<std::string>& extra = {});
  std::vector<std::string> JobsWithIdentity(Staged& s, const std::string& identity, const std::string& except);
  // A job whose dependencies all succeeded: reused (succeeded, reused_from = an identical job of
  // another run that ran itself and whose outputs verify; a failed verification is recorded as
  // reuse_rejected), waiting (for an identical job of another run in progress), or ready.
  void MakeReady(Staged& s, const std::string& job_id);
  // Jobs that ended in `s` release the jobs waiting for them (called by Commit).
  void SettleWaiters(Staged& s);
  // Upstream jobs of `job`'s run that were reused: name -> "<run>/<job>" of their outputs.
  std::map<std::string, std::string> InputsOf(const JobRecord& job) const;
  // The job whose outputs `job_id` stands for: its reuse source, or itself.
  std::string Executor(const std::string& job_id) const;

  // Stages a new run of `spec` (jobs, identities, readiness) and indexes it; on a failed
  // commit the caller calls UnindexRun.
  void StageRun(Staged& s, const std::string& run_id, const std::string& submission, const proto::RunSpec& spec,
                int64_t seq);
  void UnindexRun(const std::string& run_id);

  // Commits `staged` and, only when that succeeds, folds it into memory and sends its outbox.
  absl::Status Commit(Staged& staged);
  // Folds staged records into the in-memory maps and indexes.
  void Fold(const Staged& staged);
  // Indexes a run's jobs: spec order, position, and who waits on whom.
  void IndexRunJobs(const std::string& run_id, const proto::RunSpec& spec);
  void ScheduleReady();
  // Brings ready_queue_ up to state_.ready for the jobs whose readiness Fold changed.
  void SyncReadyQueue();
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
  std::string LogPath(const std::string& attempt_id) const;
  // Counts a message its sender may not send and answers it with PermissionDenied `why`.
  void Refuse(const std::string& peer, const proto::Envelope& env, const std::string& why);
  // <artifacts root>/<run>/<job>: the only folder whose files the coordinator reads or deletes
  // for `job`.
  std::string ArtifactDir(const JobRecord& job) const;
  void Reply(const std::string& peer, const proto::Envelope& request, proto::Envelope reply);
  void ReplyJson(const std::string& peer, const proto::Envelope& request, const nlohmann::json& doc);
  proto::Envelope CancelAttemptMessage(const std::string& attempt_id) const;
  // Stages a CancelAttempt to every connected rank of each active attempt of `job_id`.
  void StageCancelAttempts(Staged& s, const std::string& job_id);
  void Event(Staged& s, const std::string& kind, const std::string& run_id,
             const std::string& job_id, const std::string& attempt_id, const std::string& detail);

  CoordinatorConfig config_;
  JobStore* store_;
  const Clock* clock_;
  SendFn send_;
  std::string endpoint_;
  int64_t started_ms_ = 0;
  int64_t next_seq_ = 1;
  int64_t next_sweep_seq_ = 1;
  // Outputs reported by a gang's rank 0 before the last rank finished: attempt -> (path, sha256).
  std::map<std::string, std::pair<std::string, std::string>> pending_outputs_;
  bool shutdown_requested_ = false;
  bool dirty_ = true;  // something changed that may allow a placement
  int64_t frames_ = 0;
  int64_t malformed_frames_ = 0;
  int64_t send_failures_ = 0;
  int64_t refused_paths_ = 0;
  int64_t store_errors_ = 0;  // SQLite transactions that failed (busy, I/O, full disk): nothing applied
  LoopStats stats_;
  std::string artifacts_root_;  // config_.artifacts_root (default <home>/artifacts), absolute
  int64_t rejected_frames_ = 0;
  int64_t rejected_connections_ = 0;
  bool keyed_ = false;

  CoordinatorState state_;
  // state_.ready in placement order, updated lazily by SyncReadyQueue (a job's queue key needs
  // its run's order and its position, which Recover and submission index after Fold).
  ReadyQueue ready_queue_;
  std::map<std::string, ReadyQueue::iterator> queued_;
  std::set<std::string> ready_changed_;
  std::set<std::string> unreachable_peers_;
  int64_t next_rendezvous_ = 0;
  // The last two snapshots made, older first (MakeSnapshot), and the records folded since each
  // (at most every id in the state, when snapshots stop being asked for).
  std::shared_ptr<CoordinatorSnapshot> snapshots_[2];
  ChangedRecords changed_since_[2];

  // SLURM (slurm_service.cc).
  std::unique_ptr<SlurmCommands> slurm_;
  std::optional<AutoscaleConfig> autoscale_;
  SlurmLaunchSpec slurm_base_;
  int64_t next_allocation_seq_ = 1;
  int64_t next_slurm_poll_ms_ = 0;
  SlurmInfo slurm_info_;
  std::string held_by_;  // what held the autoscaler back at its last decision ("" = nothing)
};

}  // namespace dd2

#endif  // DD2_COORDINATOR_COORDINATOR_SERVICE_H_
