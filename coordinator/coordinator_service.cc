#include "coordinator/coordinator_service.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/protocol.h"
#include "common/run_spec.h"
#include "common/status_macros.h"
#include "common/checkpoint_manifest.h"
#include "common/fault_point.h"
#include "common/home.h"
#include "coordinator/access.h"
#include "coordinator/retention.h"
#include "coordinator/scheduler.h"
#include "coordinator/staged.h"
#include "coordinator/views.h"

namespace dd2 {

using Json = nlohmann::json;

bool IsTerminal(const std::string& s) {
  return s == state::kSucceeded || s == state::kFailed || s == state::kCancelled || s == state::kLost ||
         s == state::kPreempted || s == state::kStopped;
}

// Cancelled by a user or stopped by a sweep's halving: its attempts are stopped, never retried.
static bool Withdrawn(const std::string& job_state) {
  return job_state == state::kCancelled || job_state == state::kStopped;
}

absl::Status ValidateConfig(const CoordinatorConfig& c) {
  if (c.heartbeat_interval_ms < 10) return absl::InvalidArgumentError("heartbeat_interval_ms must be >= 10");
  if (c.heartbeat_liveness < 1) return absl::InvalidArgumentError("heartbeat_liveness must be >= 1");
  if (c.lost_after_ms < c.heartbeat_interval_ms * c.heartbeat_liveness) {
    return absl::InvalidArgumentError("lost_after_ms must be >= heartbeat_interval_ms x heartbeat_liveness");
  }
  if (c.retry_backoff_ms < 0 || c.retry_backoff_max_ms < c.retry_backoff_ms) {
    return absl::InvalidArgumentError("retry_backoff_ms must be >= 0 and <= retry_backoff_max_ms");
  }
  if (c.lost_retries < 0) return absl::InvalidArgumentError("lost_retries must be >= 0");
  if (c.cancel_grace_ms < 0) return absl::InvalidArgumentError("cancel_grace_ms must be >= 0");
  if (c.rendezvous_port_base < 1024 || c.rendezvous_port_span < 1 ||
      c.rendezvous_port_base + c.rendezvous_port_span > 65536) {
    return absl::InvalidArgumentError("rendezvous ports must lie in [1024, 65535]");
  }
  return absl::OkStatus();
}

CoordinatorService::CoordinatorService(CoordinatorConfig config, JobStore* store, const Clock* clock,
                                       SendFn send)
    : config_(std::move(config)), store_(store), clock_(clock), send_(std::move(send)) {
  started_ms_ = clock_->NowMs();
  artifacts_root_ = std::filesystem::absolute(config_.artifacts_root.empty() ? config_.home + "/artifacts"
                                                                             : config_.artifacts_root)
                        .lexically_normal()
                        .string();
}

absl::Status CoordinatorService::Recover() {
  DD2_ASSIGN_OR_RETURN(StoreSnapshot snap, store_->Load());
  Staged s(this);
  for (auto& r : snap.runs) {
    next_seq_ = std::max(next_seq_, r.seq + 1);
    s.runs[r.id] = std::move(r);
  }
  for (auto& j : snap.jobs) s.jobs[j.id] = std::move(j);
  for (auto& a : snap.attempts) s.attempts[a.id] = std::move(a);
  for (auto& w : snap.workers) s.workers[w.id] = std::move(w);
  for (auto& a : snap.allocations) s.allocations[a.id] = std::move(a);
  s.checkpoints = std::move(snap.checkpoints);
  s.sweeps = std::move(snap.sweeps);
  s.points = std::move(snap.points);
  s.decisions = std::move(snap.decisions);
  Fold(s);  // what is already stored: indexed, not written again
  DD2_ASSIGN_OR_RETURN(std::vector<MetricRecord> latest, store_->LatestMetrics());
  for (const auto& m : latest) state_.latest_metrics[m.job_id][m.key] = m.value;
  // Indexes that need an order the maps do not give: jobs in spec order, attempts by number.
  for (auto& [run_id, run] : state_.runs) {
    proto::RunSpec spec;
    spec.ParseFromString(run.spec);
    IndexRunJobs(run_id, spec);
    if (spec.no_reuse()) state_.no_reuse_runs.insert(run_id);
  }
  for (const auto& [id, job] : state_.jobs) {  // jobs added while the run ran (checkpoint evals)
    if (!state_.job_specs.count(id)) AddDynamicJobIndex(job);
  }
  for (auto& [job_id, ids] : state_.attempts_by_job) {
    std::sort(ids.begin(), ids.end(), [this](const std::string& x, const std::string& y) {
      return state_.attempts[x].number < state_.attempts[y].number;
    });
  }
  const int64_t now = clock_->NowMs();
  for (auto& [id, w] : state_.workers) {
    if (w.state != state::kLost) state_.live[id] = WorkerLive{"", now};
  }
  Staged boot(this);
  Event(boot, "coordinator_started", "", "", "",
        absl::StrCat(state_.runs.size(), " runs, ", state_.active_attempts.size(), " active attempts recovered"));
  DD2_RETURN_IF_ERROR(Commit(boot));
  // Deletions journaled before a crash are finished now.
  std::vector<CheckpointRecord> pending;
  for (const auto& [job_id, by_step] : state_.checkpoints) {
    for (const auto& [step, c] : by_step) {
      if (c.state == state::kDeleting) pending.push_back(c);
    }
  }
  FinishDeletions(pending);
  return absl::OkStatus();
}

void CoordinatorService::AddDynamicJobIndex(const JobRecord& job) {
  auto& order = state_.jobs_by_run[job.run_id];
  state_.job_index[job.id] = static_cast<int64_t>(order.size());
  order.push_back(job.id);
}

void CoordinatorService::IndexRunJobs(const std::string& run_id, const proto::RunSpec& spec) {
  auto& order = state_.jobs_by_run[run_id];
  order.clear();
  for (int i = 0; i < spec.jobs_size(); ++i) {
    const std::string id = absl::StrCat(run_id, "/", spec.jobs(i).name());
    order.push_back(id);
    state_.job_index[id] = i;
    state_.job_specs[id] = spec.jobs(i);
    for (const auto& dep : spec.jobs(i).after()) state_.dependents[absl::StrCat(run_id, "/", dep)].push_back(id);
  }
}

void CoordinatorService::Event(Staged& s, const std::string& kind, const std::string& run_id,
                               const std::string& job_id, const std::string& attempt_id,
                               const std::string& detail) {
  s.events.push_back({0, clock_->NowMs(), run_id, job_id, attempt_id, kind, detail});
}

absl::Status CoordinatorService::Commit(Staged& s) {
  SettleWaiters(s);
  StoreTx tx;
  for (auto& [id, r] : s.runs) tx.runs.push_back(r);
  for (auto& [id, r] : s.jobs) tx.jobs.push_back(r);
  for (auto& [id, r] : s.attempts) tx.attempts.push_back(r);
  for (auto& [id, r] : s.workers) tx.workers.push_back(r);
  for (auto& [id, r] : s.allocations) tx.allocations.push_back(r);
  tx.checkpoints = s.checkpoints;
  tx.events = s.events;
  tx.metrics = s.metrics;
  tx.sweeps = s.sweeps;
  tx.points = s.points;
  tx.decisions = s.decisions;
  const auto started = std::chrono::steady_clock::now();
  absl::Status applied = store_->Apply(tx);
  stats_.commit_seconds.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  if (absl::Status st = applied; !st.ok()) {
    // Nothing is applied: the state stays what the file holds, and the sender (whose report is
    // not acknowledged) or the next tick tries again.
    ++store_errors_;
    std::set<std::string> kinds;
    for (const auto& e : tx.events) kinds.insert(e.kind);
    const std::string what = kinds.empty() ? "changes" : absl::StrJoin(kinds, ", ");
    std::fprintf(stderr, "dd2-coordinator: could not store %s: %s; nothing applied\n", what.c_str(),
                 std::string(st.message()).c_str());
    return absl::Status(st.code(), absl::StrCat("coordinator could not store ", what, ": ", st.message()));
  }
  Fold(s);
  for (const auto& e : tx.events) ++stats_.events[e.kind];
  for (auto& [peer, env] : s.outbox) send_(peer, env);
  return absl::OkStatus();
}

void CoordinatorService::Fold(const Staged& s) {
  for (auto& [id, r] : s.runs) {
    state_.run_by_submission[r.submission_id] = id;
    state_.runs[id] = r;
  }
  for (auto& [id, r] : s.jobs) {
    auto old = state_.jobs.find(id);
    const bool was_open = old != state_.jobs.end() && !IsTerminal(old->second.state);
    state_.open_jobs[r.run_id] += static_cast<int64_t>(!IsTerminal(r.state)) - static_cast<int64_t>(was_open);
    if (!r.identity.empty()) state_.jobs_by_identity[r.identity].insert(id);
    const bool changed = r.state == state::kReady ? state_.ready.insert(id).second : state_.ready.erase(id) > 0;
    if (changed) ready_changed_.insert(id);
    state_.jobs[id] = r;
  }
  for (auto& [id, r] : s.attempts) {
    if (!state_.attempts.count(id)) state_.attempts_by_job[r.job_id].push_back(id);
    state_.PutAttempt(r);
    if (IsTerminal(r.state)) state_.finished_ranks.erase(id);
  }
  for (auto& [id, r] : s.workers) state_.workers[id] = r;
  for (auto& [id, r] : s.allocations) {
    state_.allocations[id] = r;
    next_allocation_seq_ = std::max(next_allocation_seq_, r.seq + 1);
  }
  for (auto& c : s.checkpoints) state_.checkpoints[c.job_id][c.step] = c;
  for (auto& m : s.metrics) state_.latest_metrics[m.job_id][m.key] = m.value;
  for (auto& w : s.sweeps) {
    state_.sweeps[w.id] = w;
    state_.sweep_by_submission[w.submission_id] = w.id;
    state_.sweep_specs[w.id].ParseFromString(w.spec);
    next_sweep_seq_ = std::max(next_sweep_seq_, w.seq + 1);
  }
  for (auto& p : s.points) {
    state_.points[p.sweep_id].push_back(p);
    state_.sweep_of_run[p.run_id] = p.sweep_id;
  }
  for (auto& d : s.decisions) state_.decisions[d.sweep_id][d.rung].push_back(d);
  for (int i = 0; i < 2; ++i) {
    if (!snapshots_[i]) continue;  // a snapshot made later starts from a full copy
    ChangedRecords& c = changed_since_[i];
    for (auto& [id, r] : s.runs) c.runs.insert(id);
    for (auto& [id, r] : s.jobs) c.jobs.insert(id);
    for (auto& [id, r] : s.attempts) c.attempts.insert(id);
    for (auto& [id, r] : s.workers) c.workers.insert(id);
  }
  dirty_ = true;
}

void CoordinatorService::StageCancelAttempts(Staged& s, const std::string& job_id) {
  for (const auto& aid : state_.attempts_by_job[job_id]) {
    if (!state_.active_attempts.count(aid)) continue;
    for (absl::string_view w : absl::StrSplit(state_.attempts[aid].worker_ids, ',')) {
      auto live = state_.live.find(std::string(w));
      if (live == state_.live.end() || live->second.peer.empty()) continue;
      s.outbox.push_back({live->second.peer, CancelAttemptMessage(aid)});
    }
  }
}

proto::Envelope CoordinatorService::CancelAttemptMessage(const std::string& attempt_id) const {
  proto::Envelope env;
  env.set_sender("coordinator");
  env.mutable_cancel_attempt()->set_attempt_id(attempt_id);
  env.mutable_cancel_attempt()->set_grace_ms(static_cast<uint32_t>(config_.cancel_grace_ms));
  return env;
}

void CoordinatorService::ReplyJson(const std::string& peer, const proto::Envelope& request, const Json& doc) {
  proto::Envelope reply;
  reply.mutable_json_reply()->set_json(doc.dump());
  Reply(peer, request, std::move(reply));
}

void CoordinatorService::Reply(const std::string& peer, const proto::Envelope& request,
                               proto::Envelope reply) {
  reply.set_request_id(request.request_id());
  reply.set_sender("coordinator");
  send_(peer, reply);
}



std::string CoordinatorService::ArtifactDir(const JobRecord& job) const {
  return absl::StrCat(artifacts_root_, "/", job.run_id, "/", job.name);
}

std::string CoordinatorService::LogPath(const std::string& attempt_id) const {
  // "<run>/<job>#<n>" -> logs/<run>/<job>/<n>.log
  std::string path = attempt_id;
  std::replace(path.begin(), path.end(), '#', '/');
  return absl::StrCat(config_.home, "/logs/", path, ".log");
}

// ---------------------------------------------------------------- frames

void CoordinatorService::HandleFrame(const std::string& peer, std::string_view frame, Role role) {
  ++frames_;
  auto decoded = DecodeEnvelope(frame);
  if (!decoded.ok()) {
    ++malformed_frames_;
    return;
  }
  const proto::Envelope& env = *decoded;
  if (!MayPeerSend(role, env.body_case())) {
    Refuse(peer, env, AccessDeniedMessage(role, env.body_case()));
    return;
  }
  // Any message from a registered worker counts as liveness.
  if (auto it = state_.live.find(env.sender()); it != state_.live.end() && !it->second.peer.empty() &&
                                          it->second.peer == peer) {
    it->second.last_seen_ms = clock_->NowMs();
  }
  absl::Status st;
  bool is_request = true;  // replies with Error on failure
  switch (env.body_case()) {
    case proto::Envelope::kHello: st = HandleHello(peer, env); break;
    case proto::Envelope::kHeartbeat: st = HandleHeartbeat(peer, env); break;
    case proto::Envelope::kAttemptStarted: st = HandleAttemptStarted(env); is_request = false; break;
    case proto::Envelope::kProgress: st = HandleProgress(env); is_request = false; break;
    case proto::Envelope::kLogChunk: st = HandleLogChunk(env); is_request = false; break;
    case proto::Envelope::kAttemptFinished: st = HandleAttemptFinished(peer, env); break;
    case proto::Envelope::kCheckpointCommitted: st = HandleCheckpointCommitted(peer, env); is_request = false; break;
    case proto::Envelope::kAttemptResumed: st = HandleAttemptResumed(env); is_request = false; break;
    case proto::Envelope::kCheckpoints: st = HandleCheckpoints(peer, env); break;
    case proto::Envelope::kSubmit: st = HandleSubmit(peer, env); break;
    case proto::Envelope::kStatus: st = HandleStatus(peer, env); break;
    case proto::Envelope::kJobs: st = HandleJobs(peer, env); break;
    case proto::Envelope::kLogs: st = HandleLogs(peer, env); break;
    case proto::Envelope::kCancel: st = HandleCancel(peer, env); break;
    case proto::Envelope::kWorkers: st = HandleWorkers(peer, env); break;
    case proto::Envelope::kSweepSubmit: st = HandleSweepSubmit(peer, env); break;
    case proto::Envelope::kSweeps: st = HandleSweeps(peer, env); break;
    case proto::Envelope::kCompare: st = HandleCompare(peer, env); break;
    case proto::Envelope::kMetrics: st = HandleMetrics(peer, env); break;
    case proto::Envelope::kSlurmRecord: st = HandleSlurmRecord(peer, env); break;
    case proto::Envelope::kSlurmList: st = HandleSlurmList(peer, env); break;
    case proto::Envelope::kShutdown: {
      st = CheckVersion(env);
      if (st.ok()) {
        shutdown_requested_ = true;
        proto::Envelope r;
        r.mutable_cancel_reply();
        Reply(peer, env, r);
      }
      break;
    }
    default:
      st = absl::InvalidArgumentError(absl::StrCat("message type ", env.body_case(),
                                                   " is not accepted by the coordinator"));
  }
  if (!st.ok()) {
    if (absl::IsInvalidArgument(st) && env.body_case() != proto::Envelope::kSubmit &&
        env.body_case() != proto::Envelope::kSweepSubmit) {
      ++malformed_frames_;
    }
    if (is_request || !absl::IsInvalidArgument(st)) send_(peer, ErrorReply(env, st));
  }
}

void CoordinatorService::Refuse(const std::string& peer, const proto::Envelope& env, const std::string& why) {
  ++rejected_frames_;
  // Reports a worker streams (progress, log chunks) get no reply; everything else does.
  if (env.body_case() != proto::Envelope::kProgress && env.body_case() != proto::Envelope::kLogChunk) {
    send_(peer, ErrorReply(env, absl::PermissionDeniedError(why)));
  }
}

void CoordinatorService::Schedule() {
  MarkUnreachableWorkersLost();
  if (!dirty_) return;
  const auto started = std::chrono::steady_clock::now();
  ScheduleReady();
  stats_.schedule_seconds.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
}

void CoordinatorService::CountSendFailure(const std::string& peer, bool gone) {
  ++send_failures_;
  if (gone) unreachable_peers_.insert(peer);
}

void CoordinatorService::MarkUnreachableWorkersLost() {
  if (unreachable_peers_.empty()) return;
  std::set<std::string> peers;
  peers.swap(unreachable_peers_);
  std::vector<std::string> lost;
  for (const auto& [id, live] : state_.live) {
    if (!live.peer.empty() && peers.count(live.peer)) lost.push_back(id);
  }
  for (const auto& id : lost) MarkLost(id, "its connection is gone (a message to it was undeliverable)");
}

// ---------------------------------------------------------------- workers

absl::Status CoordinatorService::HandleHello(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const proto::Hello& h = env.hello();
  if (h.worker_id().empty() || h.worker_id() != env.sender()) {
    return absl::InvalidArgumentError("Hello needs worker_id equal to the envelope sender");
  }
  if (h.device() != "cpu" && h.device() != "cuda") {
    return absl::InvalidArgumentError(absl::StrCat("Hello: unknown device '", h.device(), "'"));
  }
  if (h.slots() < 1 || h.slots() > 1024) return absl::InvalidArgumentError("Hello: slots must be 1..1024");
  const int64_t now = clock_->NowMs();
  Staged s(this);
  WorkerRecord& w = s.Worker(h.worker_id());
  const bool known = !w.id.empty();
  w = WorkerRecord{h.worker_id(), h.host(), h.device(), h.device_index(), h.slots(), h.pid(),
                   state::kAlive, now, now};
  if (h.has_slurm() && !h.slurm().job_id().empty()) {
    if (h.slurm().job_id().size() > 64) return absl::InvalidArgumentError("Hello: slurm.job_id longer than 64");
    w.slurm_job_id = h.slurm().job_id();
    w.slurm_procid = h.slurm().procid();
    w.slurm_localid = h.slurm().localid();
    w.slurm_restart_count = h.slurm().restart_count();
    w.slurm_node = h.slurm().node().substr(0, 255);
  }
  Event(s, known ? "worker_reregistered" : "worker_registered", "", "", "", h.worker_id());
  proto::Envelope welcome;
  welcome.mutable_welcome()->set_heartbeat_interval_ms(static_cast<uint32_t>(config_.heartbeat_interval_ms));
  welcome.mutable_welcome()->set_heartbeat_liveness(static_cast<uint32_t>(config_.heartbeat_liveness));
  std::set<std::string> held;
  for (const auto& a : h.attempts()) {
    held.insert(a.attempt_id());
    auto it = state_.attempts.find(a.attempt_id());
    if (it == state_.attempts.end() || IsTerminal(it->second.state) || !Holds(it->second, h.worker_id())) {
      welcome.mutable_welcome()->add_stop_attempts(a.attempt_id());  // fenced: not ours any more
      continue;
    }
    const AttemptRecord& att = it->second;
    Event(s, "attempt_reattached", state_.jobs[att.job_id].run_id, att.job_id, att.id, h.worker_id());
    if (Withdrawn(state_.jobs[att.job_id].state)) {
      proto::Envelope cancel = CancelAttemptMessage(att.id);
      s.outbox.push_back({peer, cancel});
    }
  }
  // Attempts we think this worker runs but it does not hold: it restarted, or never got them.
  for (const auto& id : state_.ActiveAttemptsOf(h.worker_id())) {
    if (held.count(id)) continue;
    AttemptRecord& a = s.Attempt(id);
    a.state = state::kLost;
    a.cause = "worker lost";
    a.finished_ms = now;
    Event(s, "attempt_lost", state_.jobs[a.job_id].run_id, a.job_id, id, "worker restarted without it");
    if (!Withdrawn(s.Job(a.job_id).state)) RetryOrFail(s, a.job_id, "worker lost", true);
    FinishRunIfDone(s, s.Job(a.job_id).run_id);
  }
  welcome.set_request_id(env.request_id());
  welcome.set_sender("coordinator");
  s.outbox.insert(s.outbox.begin(), {peer, welcome});
  DD2_RETURN_IF_ERROR(Commit(s));
  state_.live[h.worker_id()] = WorkerLive{peer, now};
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleHeartbeat(const std::string& peer, const proto::Envelope& env) {
  auto it = state_.live.find(env.sender());
  auto w = state_.workers.find(env.sender());
  if (it == state_.live.end() || it->second.peer.empty() || w == state_.workers.end() ||
      w->second.state == state::kLost) {
    proto::Envelope r;
    r.mutable_re_register();
    Reply(peer, env, r);
    return absl::OkStatus();
  }
  it->second.peer = peer;
  it->second.last_seen_ms = clock_->NowMs();
  if (env.heartbeat().draining() && w->second.state == state::kAlive) {
    Staged s(this);  // shutting down: keeps its attempts until they report, gets no new work
    s.Worker(env.sender()).state = state::kSuspect;
    Event(s, "worker_draining", "", "", "", env.sender());
    DD2_RETURN_IF_ERROR(Commit(s));
  } else if (!env.heartbeat().draining() && w->second.state == state::kSuspect) {
    Staged s(this);
    s.Worker(env.sender()).state = state::kAlive;
    Event(s, "worker_recovered", "", "", "", env.sender());
    DD2_RETURN_IF_ERROR(Commit(s));
  }
  proto::Envelope ack;
  for (const auto& id : env.heartbeat().running_attempts()) {
    auto a = state_.attempts.find(id);
    if (a == state_.attempts.end() || IsTerminal(a->second.state) || !Holds(a->second, env.sender())) {
      ack.mutable_heartbeat_ack()->add_stop_attempts(id);
    }
  }
  ack.mutable_heartbeat_ack();
  Reply(peer, env, ack);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleAttemptStarted(const proto::Envelope& env) {
  const std::string& id = env.attempt_started().attempt_id();
  if (!state_.active_attempts.count(id) || !Holds(state_.attempts[id], env.sender())) return absl::OkStatus();
  if (state_.attempts[id].state != state::kAssigned) return absl::OkStatus();  // duplicate
  Staged s(this);
  AttemptRecord& a = s.Attempt(id);
  a.state = state::kRunning;
  JobRecord& j = s.Job(a.job_id);
  if (j.state == state::kAssigned) {
    j.state = state::kRunning;
    j.updated_ms = clock_->NowMs();
  }
  Event(s, "attempt_started", j.run_id, j.id, id,
        absl::StrCat(env.sender(), " pid ", env.attempt_started().child_pid()));
  return Commit(s);
}

absl::Status CoordinatorService::HandleProgress(const proto::Envelope& env) {
  const proto::Progress& p = env.progress();
  if (!state_.active_attempts.count(p.attempt_id()) || !Holds(state_.attempts[p.attempt_id()], env.sender())) {
    return absl::OkStatus();
  }
  Staged s(this);
  JobRecord& j = s.Job(state_.attempts[p.attempt_id()].job_id);
  j.step = static_cast<int64_t>(p.step());
  j.total = static_cast<int64_t>(p.total());
  j.updated_ms = clock_->NowMs();
  for (const auto& m : p.metrics()) {
    if (m.key().empty() || m.key().size() > 128) continue;
    s.metrics.push_back({j.run_id, j.id, m.key(), j.step, m.value(), j.updated_ms});
  }
  return Commit(s);
}

absl::Status CoordinatorService::HandleLogChunk(const proto::Envelope& env) {
  const proto::LogChunk& c = env.log_chunk();
  auto it = state_.attempts.find(c.attempt_id());
  if (it == state_.attempts.end() || !Holds(it->second, env.sender())) return absl::OkStatus();
  const std::string path = LogPath(c.attempt_id());
  std::error_code ec;
  std::filesystem::create_directories(std::filesystem::path(path).parent_path(), ec);
  uint64_t size = std::filesystem::exists(path, ec) ? std::filesystem::file_size(path, ec) : 0;
  if (c.offset() + c.data().size() <= size) return absl::OkStatus();  // duplicate
  std::ofstream out(path, std::ios::app | std::ios::binary);
  if (c.offset() > size) out << "\n[dd2: " << (c.offset() - size) << " bytes of log lost]\n";
  const uint64_t skip = c.offset() < size ? size - c.offset() : 0;
  out.write(c.data().data() + skip, static_cast<std::streamsize>(c.data().size() - skip));
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleAttemptFinished(const std::string& peer,
                                                       const proto::Envelope& env) {
  const proto::AttemptFinished& f = env.attempt_finished();
  proto::Envelope ack;
  ack.mutable_finished_ack()->set_attempt_id(f.attempt_id());
  if (!state_.active_attempts.count(f.attempt_id()) || !Holds(state_.attempts[f.attempt_id()], env.sender())) {
    Reply(peer, env, ack);  // already recorded, or fenced: either way the worker may forget it
    return absl::OkStatus();
  }
  const int64_t now = clock_->NowMs();
  Staged s(this);
  AttemptRecord& a = s.Attempt(f.attempt_id());
  JobRecord& job = s.Job(a.job_id);
  const bool ok = f.exit_code() == 0 && f.signal() == 0 && !f.cancelled();
  std::vector<std::string> ranks = absl::StrSplit(a.worker_ids, ',');
  std::string retention_job;  // a generator whose checkpoint an eval just scored
  std::string outputs_path = f.outputs_path();  // read later (reuse verifies it): only inside the job's folder
  if (!outputs_path.empty()) {
    if (absl::Status inside = CheckInsideDir(outputs_path, ArtifactDir(job)); !inside.ok()) {
      Event(s, "outputs_refused", job.run_id, job.id, a.id,
            absl::StrCat("from ", env.sender(), ": ", inside.message()).substr(0, 1024));
      ++refused_paths_;
      outputs_path.clear();
    }
  }
  if (ok && ranks.size() > 1) {
    if (!outputs_path.empty()) pending_outputs_[a.id] = {outputs_path, f.outputs_sha256()};
    auto& done = state_.finished_ranks[a.id];
    done.insert(env.sender());
    // Unacknowledged until the whole gang is done: the worker keeps reporting it (and holds it
    // across a coordinator restart, which forgets this set), so no rank's success is lost.
    if (done.size() < ranks.size()) return absl::OkStatus();
  }
  a.finished_ms = now;
  a.exit_code = f.exit_code();
  a.signal = f.signal();
  if (Withdrawn(job.state) || f.cancelled()) {
    a.state = state::kCancelled;
    a.cause = job.state == state::kStopped ? "stopped by successive halving" : "cancelled";
  } else if (f.preempted()) {
    a.state = state::kPreempted;
    a.cause = f.cause().empty() ? "preempted" : f.cause().substr(0, 512);
    job.state = state::kReady;  // at once, and no retry is used
    job.failure.clear();
    job.updated_ms = now;
    Event(s, "attempt_preempted", job.run_id, job.id, a.id,
          absl::StrCat("rank ", env.sender(), " preempted (", a.cause, "); rescheduled, retry budget unchanged"));
  } else if (f.infrastructure() || (ranks.size() > 1 && absl::StartsWith(f.cause(), "gang peer lost"))) {
    a.state = state::kLost;  // SLURM, or another rank that went away: infrastructure, not the job's fault
    a.cause = f.cause().substr(0, 512);
    Event(s, "attempt_lost", job.run_id, job.id, a.id, a.cause);
    RetryOrFail(s, job.id, a.cause, true);
  } else if (ok) {
    a.state = state::kSucceeded;
    job.state = state::kSucceeded;
    job.failure.clear();
    job.updated_ms = now;
    job.reused_from.clear();
    auto outputs = pending_outputs_.find(a.id);
    if (!outputs_path.empty()) {
      job.outputs_path = outputs_path;
      job.outputs_sha256 = f.outputs_sha256();
    } else if (outputs != pending_outputs_.end()) {
      job.outputs_path = outputs->second.first;
      job.outputs_sha256 = outputs->second.second;
    }
    pending_outputs_.erase(a.id);
    Event(s, "job_succeeded", job.run_id, job.id, a.id, "");
    PromoteDependents(s, job.id);
    // An eval of a checkpoint scores it (keep_best may read that) and releases its pin.
    if (auto target = CheckpointEvalTarget(job)) {
      retention_job = absl::StrCat(job.run_id, "/", target->first);
      auto it = state_.checkpoints.find(retention_job);
      if (it != state_.checkpoints.end() && it->second.count(target->second)) {
        CheckpointRecord c = it->second.at(target->second);
        Json m = Json::parse(c.metrics_json, nullptr, false);
        if (!m.is_object()) m = Json::object();
        for (const auto& [k, v] : state_.latest_metrics[job.id]) m[k] = v;
        c.metrics_json = m.dump();
        s.checkpoints.push_back(c);
      }
    }
  } else {
    a.state = state::kFailed;
    a.cause = f.signal() != 0 ? absl::StrCat("killed by signal ", f.signal())
                              : absl::StrCat("exit code ", f.exit_code());
    if (!f.cause().empty()) absl::StrAppend(&a.cause, ": ", f.cause().substr(0, 512));
    Event(s, "attempt_failed", job.run_id, job.id, a.id, a.cause);
    RetryOrFail(s, job.id, a.cause, false);
  }
  // Any other rank of a gang stops with it; ranks that finished before are acknowledged now.
  for (const auto& w : ranks) {
    if (w == env.sender() || !state_.live.count(w) || state_.live[w].peer.empty()) continue;
    if (a.state == state::kSucceeded) {
      proto::Envelope rank_ack;
      rank_ack.mutable_finished_ack()->set_attempt_id(a.id);
      rank_ack.set_sender("coordinator");
      s.outbox.push_back({state_.live[w].peer, rank_ack});
      continue;
    }
    proto::Envelope cancel = CancelAttemptMessage(a.id);
    s.outbox.push_back({state_.live[w].peer, cancel});
  }
  Event(s, "attempt_finished", job.run_id, job.id, a.id, a.state);
  FinishRunIfDone(s, job.run_id);
  ack.set_request_id(env.request_id());
  ack.set_sender("coordinator");
  s.outbox.push_back({peer, ack});
  if (a.state == state::kSucceeded) FaultPoint("finish_transition", job.id);
  DD2_RETURN_IF_ERROR(Commit(s));
  return retention_job.empty() ? absl::OkStatus() : ApplyRetention(retention_job);
}

void CoordinatorService::RetryOrFail(Staged& s, const std::string& job_id, const std::string& cause,
                                     bool infra) {
  JobRecord& job = s.Job(job_id);
  int64_t failed = 0, lost = 0;
  for (const auto& id : state_.attempts_by_job[job_id]) {
    const AttemptRecord& a = s.attempts.count(id) ? s.attempts[id] : state_.attempts[id];
    if (a.state == state::kFailed) ++failed;
    if (a.state == state::kLost) ++lost;
  }
  const int64_t now = clock_->NowMs();
  job.updated_ms = now;
  job.failure = cause;
  const bool budget = infra ? lost <= config_.lost_retries : failed <= job.retries;
  if (budget) {
    int64_t n = infra ? lost : failed;
    int64_t backoff = config_.retry_backoff_ms;
    for (int64_t i = 1; i < n && backoff < config_.retry_backoff_max_ms; ++i) backoff *= 2;
    backoff = std::min(backoff, config_.retry_backoff_max_ms);
    job.state = state::kRetrying;
    job.not_before_ms = now + backoff;
    Event(s, "job_retrying", job.run_id, job.id, "", absl::StrCat(cause, "; retry in ", backoff, " ms"));
    return;
  }
  job.state = state::kFailed;
  Event(s, "job_failed", job.run_id, job.id, "", cause);
  // Everything downstream can no longer run.
  CancelDownstream(s, job_id, absl::StrCat("upstream job '", job.name, "' did not succeed"));
}

void CoordinatorService::CancelDownstream(Staged& s, const std::string& job_id, const std::string& why) {
  std::vector<std::string> frontier = {job_id};
  while (!frontier.empty()) {
    const std::string id = frontier.back();
    frontier.pop_back();
    for (const auto& child : state_.dependents[id]) {
      JobRecord& d = s.Job(child);
      if (d.state != state::kPending) continue;
      d.state = state::kCancelled;
      d.failure = why;
      d.updated_ms = clock_->NowMs();
      Event(s, "job_cancelled", d.run_id, d.id, "", why);
      frontier.push_back(child);
    }
  }
}

void CoordinatorService::PromoteDependents(Staged& s, const std::string& job_id) {
  for (const auto& child : state_.dependents[job_id]) {
    JobRecord& d = s.Job(child);
    if (d.state != state::kPending) continue;
    Json after = Json::parse(d.after_json, nullptr, false);
    bool all = true;
    for (const auto& dep : after) {
      if (s.Job(absl::StrCat(d.run_id, "/", dep.get<std::string>())).state != state::kSucceeded) all = false;
    }
    if (all) MakeReady(s, child);
  }
}

void CoordinatorService::FinishRunIfDone(Staged& s, const std::string& run_id) {
  // Read, not staged: a run record (with its spec) is written only when the run ends.
  const auto staged = s.runs.find(run_id);
  const auto committed = state_.runs.find(run_id);
  if (staged == s.runs.end() && committed == state_.runs.end()) return;
  if (IsTerminal((staged != s.runs.end() ? staged->second : committed->second).state)) return;
  // Open jobs = committed count, corrected by this transition's staged jobs.
  int64_t open = state_.open_jobs[run_id];
  for (const auto& [id, j] : s.jobs) {
    if (j.run_id != run_id) continue;
    auto old = state_.jobs.find(id);
    const bool was_open = old != state_.jobs.end() && !IsTerminal(old->second.state);
    open += static_cast<int64_t>(!IsTerminal(j.state)) - static_cast<int64_t>(was_open);
  }
  if (open > 0) return;
  bool all_succeeded = true, any_failed = false, any_stopped = false;
  for (const auto& id : state_.jobs_by_run[run_id]) {
    const JobRecord& j = s.Job(id);
    // A cancelled job whose attempt still runs keeps the run open until it stops.
    for (const auto& aid : state_.attempts_by_job[id]) {
      const AttemptRecord& a = s.attempts.count(aid) ? s.attempts[aid] : state_.attempts[aid];
      if (!IsTerminal(a.state)) return;
    }
    all_succeeded = all_succeeded && j.state == state::kSucceeded;
    any_failed = any_failed || j.state == state::kFailed;
    any_stopped = any_stopped || j.state == state::kStopped;
  }
  RunRecord& run = s.Run(run_id);
  run.state = all_succeeded ? state::kSucceeded
              : any_failed  ? state::kFailed
              : any_stopped ? state::kStopped
                            : state::kCancelled;
  run.finished_ms = clock_->NowMs();
  Event(s, "run_finished", run_id, "", "", run.state);
}

void CoordinatorService::MarkLost(const std::string& worker_id, const std::string& cause) {
  Staged s(this);
  s.Worker(worker_id).state = state::kLost;
  Event(s, "worker_lost", "", "", "", absl::StrCat(worker_id, ": ", cause));
  const int64_t now = clock_->NowMs();
  for (const auto& id : state_.ActiveAttemptsOf(worker_id)) {
    AttemptRecord& a = s.Attempt(id);
    a.state = state::kLost;
    a.cause = "worker lost";
    a.finished_ms = now;
    JobRecord& job = s.Job(a.job_id);
    Event(s, "attempt_lost", job.run_id, job.id, id, worker_id);
    if (!Withdrawn(job.state)) RetryOrFail(s, job.id, "worker lost", true);
    for (absl::string_view w : absl::StrSplit(a.worker_ids, ',')) {
      std::string other(w);
      if (other == worker_id || !state_.live.count(other) || state_.live[other].peer.empty()) continue;
      proto::Envelope cancel = CancelAttemptMessage(id);
      s.outbox.push_back({state_.live[other].peer, cancel});
    }
    FinishRunIfDone(s, job.run_id);
  }
  if (Commit(s).ok()) state_.live.erase(worker_id);
}

void CoordinatorService::Tick() {
  const int64_t now = clock_->NowMs();
  std::vector<std::string> lost;
  for (auto& [id, live] : state_.live) {
    const int64_t silent = now - live.last_seen_ms;
    const std::string& st = state_.workers[id].state;
    if (silent > config_.lost_after_ms) {
      lost.push_back(id);
    } else if (silent > config_.heartbeat_interval_ms * config_.heartbeat_liveness && st == state::kAlive) {
      Staged s(this);
      s.Worker(id).state = state::kSuspect;
      Event(s, "worker_suspect", "", "", "", absl::StrCat(id, " silent for ", silent, " ms"));
      Commit(s).IgnoreError();
    }
  }
  for (const auto& id : lost) MarkLost(id, absl::StrCat("no message for more than ", config_.lost_after_ms, " ms"));
  AdvanceHalving();
  SlurmTick();
  for (const auto& [id, job] : state_.jobs) {
    if (job.state == state::kRetrying && job.not_before_ms <= now) {
      Staged s(this);
      s.Job(id).state = state::kReady;
      s.Job(id).updated_ms = now;
      Commit(s).IgnoreError();
    }
  }
  Schedule();
}

void CoordinatorService::SyncReadyQueue() {
  for (const auto& id : ready_changed_) {
    if (auto it = queued_.find(id); it != queued_.end()) {
      ready_queue_.erase(it->second);
      queued_.erase(it);
    }
    if (!state_.ready.count(id)) continue;
    const JobRecord& job = state_.jobs[id];
    const RunRecord& run = state_.runs[job.run_id];
    queued_[id] = ready_queue_
                      .insert({id, run.priority, job.priority, run.seq, state_.job_index[id], job.workers, job.device})
                      .first;
  }
  ready_changed_.clear();
}

void CoordinatorService::ScheduleReady() {
  dirty_ = false;
  SyncReadyQueue();
  if (ready_queue_.empty()) return;
  // Connected, alive workers and the slots they use, walked in id order (live, workers and
  // used_slots are maps by worker id) without a lookup or a copy: most passes follow a report
  // that freed nothing, and end at the first walk.
  auto each_worker = [this](auto&& visit) {
    auto w = state_.workers.begin();
    auto u = state_.used_slots.begin();
    for (const auto& [id, live] : state_.live) {
      while (w != state_.workers.end() && w->first < id) ++w;
      while (u != state_.used_slots.end() && u->first < id) ++u;
      if (w == state_.workers.end() || w->first != id || live.peer.empty() || w->second.state != state::kAlive) continue;
      visit(w->second, u != state_.used_slots.end() && u->first == id ? u->second : 0);
    }
  };
  bool any_free = false;
  each_worker([&](const WorkerRecord& w, int64_t used) { any_free = any_free || used < w.slots; });
  if (!any_free) return;
  std::vector<WorkerSlots> slots;
  each_worker([&](const WorkerRecord& w, int64_t used) { slots.push_back({w.id, w.device, w.slots, w.slots - used}); });
  // One transaction for the whole pass: a pass that places hundreds of jobs costs one commit,
  // not one each (the loop answers nothing while it commits).
  Staged s(this);
  for (const Placement& p : dd2::Schedule(slots, ready_queue_)) {
    JobRecord& job = s.Job(p.job_id);
    job.attempts += 1;
    job.state = state::kAssigned;
    job.updated_ms = clock_->NowMs();
    const std::string attempt_id = absl::StrCat(job.id, "#", job.attempts);
    s.Attempt(attempt_id) = AttemptRecord{attempt_id, job.id, job.attempts, state::kAssigned,
                                          absl::StrJoin(p.worker_ids, ","), clock_->NowMs()};
    Event(s, "attempt_assigned", job.run_id, job.id, attempt_id, absl::StrJoin(p.worker_ids, ","));
    std::string rendezvous;
    if (p.worker_ids.size() > 1) {  // a fresh store address per attempt
      const int64_t port = config_.rendezvous_port_base + (started_ms_ + next_rendezvous_++) % config_.rendezvous_port_span;
      rendezvous = absl::StrCat("tcp://", state_.workers[p.worker_ids[0]].host, ":", port);
    }
    for (size_t rank = 0; rank < p.worker_ids.size(); ++rank) {
      const std::string& w = p.worker_ids[rank];
      proto::Envelope assign;
      assign.set_sender("coordinator");
      auto* a = assign.mutable_assign();
      a->set_attempt_id(attempt_id);
      a->set_job_id(job.id);
      a->set_run_id(job.run_id);
      a->set_type(job.type);
      a->set_params_json(job.params_json);
      a->set_attempt(static_cast<uint32_t>(job.attempts));
      a->set_rank(static_cast<uint32_t>(rank));
      a->set_world_size(static_cast<uint32_t>(p.worker_ids.size()));
      a->set_rendezvous(rendezvous);
      for (const auto& [name, dir] : InputsOf(job)) (*a->mutable_inputs())[name] = dir;
      s.outbox.push_back({state_.live[w].peer, assign});
    }
  }
  // On failure nothing is placed, and the next pass tries again.
  dirty_ = !Commit(s).ok();
}

// ---------------------------------------------------------------- checkpoints

absl::Status CoordinatorService::HandleCheckpointCommitted(const std::string& peer, const proto::Envelope& env) {
  const proto::CheckpointCommitted& c = env.checkpoint_committed();
  // Acknowledged once recorded, or when it never will be (fenced, duplicate, malformed); only a
  // failed commit leaves it unacknowledged, and the worker sends it again.
  proto::Envelope ack;
  ack.mutable_checkpoint_ack()->set_attempt_id(c.attempt_id());
  ack.mutable_checkpoint_ack()->set_step(c.step());
  auto acked = [&](absl::Status st) {
    Reply(peer, env, ack);
    return st;
  };
  auto it = state_.attempts.find(c.attempt_id());
  // Only the job's newest attempt, held by the sender, may commit: a fenced straggler must not.
  if (it == state_.attempts.end() || !Holds(it->second, env.sender()) ||
      state_.attempts_by_job[it->second.job_id].back() != c.attempt_id()) {
    return acked(absl::OkStatus());
  }
  if (c.path().empty() || c.sha256().size() != 64) {
    return acked(absl::InvalidArgumentError("CheckpointCommitted needs a path and a 64-hex-digit sha256"));
  }
  const AttemptRecord& a = it->second;
  const JobRecord& job = state_.jobs[a.job_id];
  const int64_t step = static_cast<int64_t>(c.step());
  if (absl::Status inside = CheckInsideDir(c.path(), ArtifactDir(job)); !inside.ok()) {
    // Never recorded, so retention never deletes it; acknowledged so the worker stops resending.
    Staged s(this);
    Event(s, "checkpoint_refused", job.run_id, job.id, a.id,
          absl::StrCat("step ", step, " from ", env.sender(), ": ", inside.message()).substr(0, 1024));
    DD2_RETURN_IF_ERROR(Commit(s));
    ++refused_paths_;
    return acked(absl::OkStatus());
  }
  int64_t created_ms = clock_->NowMs();
  if (auto k = state_.checkpoints[a.job_id].find(step); k != state_.checkpoints[a.job_id].end()) {
    if (k->second.sha256 == c.sha256() && k->second.state == state::kCommitted) return acked(absl::OkStatus());  // duplicate
    created_ms = k->second.created_ms;  // the same step written again: the row keeps its creation time
  }
  Json metrics = Json::object();
  for (const auto& m : c.metrics()) {
    if (!m.key().empty() && m.key().size() <= 128) metrics[m.key()] = m.value();
  }
  Staged s(this);
  s.checkpoints.push_back({job.run_id, job.id, a.id, step, c.path(), c.sha256(), static_cast<int64_t>(c.bytes()),
                           state::kCommitted, created_ms, metrics.dump()});
  Event(s, "checkpoint_committed", job.run_id, job.id, a.id, absl::StrCat("step ", step));
  const std::string eval_id = MaybeAddCheckpointEval(s, job, step);
  DD2_RETURN_IF_ERROR(Commit(s));  // unacknowledged when this fails: the worker resends
  acked(absl::OkStatus());
  if (!eval_id.empty()) AddDynamicJobIndex(state_.jobs[eval_id]);
  return ApplyRetention(job.id);
}

std::optional<std::pair<std::string, int64_t>> CoordinatorService::CheckpointEvalTarget(const JobRecord& job) {
  if (job.type != "eval") return std::nullopt;
  Json p = Json::parse(job.params_json, nullptr, false);
  if (!p.is_object() || p.value("checkpoint_step", int64_t{0}) <= 0) return std::nullopt;
  return std::make_pair(p.value("generator", std::string()), p.value("checkpoint_step", int64_t{0}));
}

absl::Status CoordinatorService::ApplyRetention(const std::string& job_id) {
  Staged s(this);
  auto victims = StageRetention(s, job_id);
  if (victims.empty()) return absl::OkStatus();
  DD2_RETURN_IF_ERROR(Commit(s));
  FinishDeletions(victims);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleAttemptResumed(const proto::Envelope& env) {
  const proto::AttemptResumed& r = env.attempt_resumed();
  if (!state_.active_attempts.count(r.attempt_id()) || !Holds(state_.attempts[r.attempt_id()], env.sender())) {
    return absl::OkStatus();
  }
  const AttemptRecord& a = state_.attempts[r.attempt_id()];
  Staged s(this);
  Event(s, "attempt_resumed", state_.jobs[a.job_id].run_id, a.job_id, a.id, absl::StrCat("step ", r.step()));
  return Commit(s);
}

std::string CoordinatorService::MaybeAddCheckpointEval(Staged& s, const JobRecord& job, int64_t step) {
  auto spec = state_.job_specs.find(job.id);
  if (spec == state_.job_specs.end() || !spec->second.has_eval_every()) return "";
  const proto::EvalEvery& every = spec->second.eval_every();
  if (every.steps() == 0 || step % static_cast<int64_t>(every.steps()) != 0) return "";
  const std::string name = absl::StrCat(job.name, "-eval-", step);
  const std::string id = absl::StrCat(job.run_id, "/", name);
  if (state_.jobs.count(id) || s.jobs.count(id)) return "";
  Json params = Json::parse(every.params_json(), nullptr, false);
  if (!params.is_object()) return "";
  params["generator"] = job.name;
  params["checkpoint_step"] = step;
  JobRecord& e = s.Job(id);
  e = JobRecord{id, job.run_id, name, "eval", params.dump(), Json::array({job.name}).dump(), 1, job.device, 0,
                job.priority - 1, state::kPending};
  e.updated_ms = clock_->NowMs();
  Event(s, "job_added", job.run_id, id, "", absl::StrCat("eval of ", job.name, " at step ", step));
  AssignIdentities(s, job.run_id, {id});
  MakeReady(s, id);
  return id;
}

std::vector<CheckpointRecord> CoordinatorService::StageRetention(Staged& s, const std::string& job_id) {
  auto spec = state_.job_specs.find(job_id);
  if (spec == state_.job_specs.end() || !spec->second.has_retention()) return {};
  const proto::Retention& r = spec->second.retention();
  RetentionPolicy policy{r.keep_latest(), r.keep_best(), r.metric(), r.mode() == "max"};
  std::vector<RetainedCheckpoint> committed;
  for (const auto& [step, c] : state_.checkpoints[job_id]) {
    if (c.state != state::kCommitted) continue;
    RetainedCheckpoint rc{step, {}};
    Json m = Json::parse(c.metrics_json, nullptr, false);
    if (m.is_object()) {
      for (auto& [k, v] : m.items()) {
        if (v.is_number()) rc.metrics[k] = v.get<double>();
      }
    }
    committed.push_back(std::move(rc));
  }
  // Pinned: checkpoints an unfinished eval reads, in this run or, through reuse, in another.
  std::set<int64_t> pinned;
  const JobRecord& job = state_.jobs[job_id];
  for (const auto& [id, j] : state_.jobs) {
    if (j.type != "eval" || IsTerminal(j.state)) continue;
    auto target = CheckpointEvalTarget(j);
    if (target && Executor(absl::StrCat(j.run_id, "/", target->first)) == job_id) pinned.insert(target->second);
  }
  std::vector<CheckpointRecord> victims;
  for (int64_t step : CheckpointsToDelete(committed, policy, pinned)) {
    CheckpointRecord c = state_.checkpoints[job_id][step];
    c.state = state::kDeleting;
    s.checkpoints.push_back(c);
    Event(s, "checkpoint_deleting", job.run_id, job_id, "", absl::StrCat("step ", step, ": ", c.path));
    victims.push_back(c);
  }
  return victims;
}

void CoordinatorService::FinishDeletions(const std::vector<CheckpointRecord>& victims) {
  if (victims.empty()) return;
  Staged s(this);
  for (CheckpointRecord c : victims) {
    // Checked again at deletion: a folder on the path may have become a symlink since the commit.
    absl::Status st = CheckInsideDir(c.path, ArtifactDir(state_.jobs[c.job_id]));
    if (st.ok()) st = RemoveCheckpoint(c.path);
    if (!st.ok()) {  // stays "deleting"; retried at the next start
      Event(s, "checkpoint_delete_failed", c.run_id, c.job_id, "", std::string(st.message()));
      continue;
    }
    c.state = state::kDeleted;
    s.checkpoints.push_back(c);
    Event(s, "checkpoint_deleted", c.run_id, c.job_id, "", absl::StrCat("step ", c.step));
  }
  Commit(s).IgnoreError();
}

absl::Status CoordinatorService::HandleCheckpoints(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  DD2_ASSIGN_OR_RETURN(Json doc, CheckpointsDocument(state_, env.checkpoints().run_id()));
  ReplyJson(peer, env, doc);
  return absl::OkStatus();
}

// ---------------------------------------------------------------- clients

absl::Status CoordinatorService::HandleSubmit(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const proto::SubmitRequest& req = env.submit();
  std::string submission = req.submission_id();
  if (submission.empty() || submission.size() > 128) {
    return absl::InvalidArgumentError("submission_id must be 1..128 characters");
  }
  proto::Envelope reply;
  if (auto it = state_.run_by_submission.find(submission); it != state_.run_by_submission.end()) {
    reply.mutable_submit_reply()->set_run_id(it->second);
    reply.mutable_submit_reply()->set_existed(true);
    Reply(peer, env, reply);
    return absl::OkStatus();
  }
  DD2_RETURN_IF_ERROR(ValidateRunSpec(req.spec()));
  Staged s(this);
  const int64_t seq = next_seq_;
  const std::string run_id = absl::StrCat(req.spec().name(), "-", seq);
  StageRun(s, run_id, submission, req.spec(), seq);
  reply.mutable_submit_reply()->set_run_id(run_id);
  reply.set_request_id(env.request_id());
  reply.set_sender("coordinator");
  s.outbox.push_back({peer, reply});
  if (absl::Status st = Commit(s); !st.ok()) {
    UnindexRun(run_id);
    return st;
  }
  next_seq_ = seq + 1;
  return absl::OkStatus();
}

void CoordinatorService::StageRun(Staged& s, const std::string& run_id, const std::string& submission,
                                  const proto::RunSpec& spec, int64_t seq) {
  const int64_t now = clock_->NowMs();
  s.Run(run_id) = RunRecord{run_id, submission, spec.name(), spec.SerializeAsString(), state::kRunning,
                            spec.priority(), seq, now, 0};
  for (const auto& js : spec.jobs()) {
    const std::string job_id = absl::StrCat(run_id, "/", js.name());
    Json after = Json::array();
    for (const auto& a : js.after()) after.push_back(a);
    s.Job(job_id) = JobRecord{job_id, run_id, js.name(), js.type(), js.params_json(), after.dump(),
                              js.resources().workers(),
                              js.resources().device().empty() ? "any" : js.resources().device(),
                              js.retries(), js.priority(), state::kPending};
    s.Job(job_id).updated_ms = now;
  }
  Event(s, "run_submitted", run_id, "", "", absl::StrCat(spec.jobs_size(), " jobs from ", spec.source()));
  IndexRunJobs(run_id, spec);
  if (spec.no_reuse()) state_.no_reuse_runs.insert(run_id);
  AssignIdentities(s, run_id);
  for (const auto& js : spec.jobs()) {
    if (js.after().empty()) MakeReady(s, absl::StrCat(run_id, "/", js.name()));
  }
  FinishRunIfDone(s, run_id);  // every job may have been reused
}

void CoordinatorService::UnindexRun(const std::string& run_id) {
  for (const auto& id : state_.jobs_by_run[run_id]) {
    state_.job_index.erase(id);
    state_.job_specs.erase(id);
    state_.dependents.erase(id);
  }
  state_.jobs_by_run.erase(run_id);
  state_.no_reuse_runs.erase(run_id);
}

CoordinatorInfo CoordinatorService::Info() const {
  return CoordinatorInfo{endpoint_,      clock_->NowMs() - started_ms_, frames_,         malformed_frames_,
                         send_failures_, rejected_frames_,              rejected_connections_, refused_paths_,
                         store_errors_,  keyed_};
}

std::shared_ptr<const CoordinatorSnapshot> CoordinatorService::MakeSnapshot() {
  const auto started = std::chrono::steady_clock::now();
  // The older of the last two snapshots is recycled once nothing else holds it (the HTTP thread
  // holds the latest, and an older one only while a request that took it is in flight).
  std::shared_ptr<CoordinatorSnapshot> s;
  if (snapshots_[0] && snapshots_[0].use_count() == 1) {
    // The HTTP thread's reads of it happened before its (release) decrement that use_count saw.
    std::atomic_thread_fence(std::memory_order_acquire);
    s = std::move(snapshots_[0]);
    SyncViewStateChanged(state_, changed_since_[0], &s->state);
  } else {
    s = std::make_shared<CoordinatorSnapshot>();
    SyncViewState(state_, &s->state);
  }
  s->info = Info();
  s->now_ms = clock_->NowMs();
  s->artifacts_root = artifacts_root_;
  stats_.snapshot_seconds.Observe(std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count());
  s->stats = stats_;
  snapshots_[0] = std::move(snapshots_[1]);
  changed_since_[0] = std::move(changed_since_[1]);
  snapshots_[1] = s;
  changed_since_[1] = {};
  return s;
}

absl::Status CoordinatorService::HandleStatus(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  DD2_ASSIGN_OR_RETURN(Json doc, StatusDocument(state_, env.status().run_id(), Info(), env.status().brief()));
  ReplyJson(peer, env, doc);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleJobs(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  DD2_ASSIGN_OR_RETURN(Json doc, JobsDocument(state_, env.jobs().run_id()));
  ReplyJson(peer, env, doc);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleLogs(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const proto::LogsRequest& req = env.logs();
  auto job = state_.jobs.find(req.job_id());
  if (job == state_.jobs.end()) return absl::NotFoundError(absl::StrCat("no job '", req.job_id(), "'"));
  proto::Envelope reply;
  auto* r = reply.mutable_logs_reply();
  const auto& attempts = state_.attempts_by_job[req.job_id()];
  r->set_finished(IsTerminal(job->second.state) &&
                  (attempts.empty() || IsTerminal(state_.attempts[attempts.back()].state)));
  r->set_next_offset(req.offset());
  if (!attempts.empty()) {
    r->set_attempt_id(attempts.back());
    std::ifstream in(LogPath(attempts.back()), std::ios::binary);
    if (in) {
      in.seekg(static_cast<std::streamoff>(req.offset()));
      const uint32_t max = req.max_bytes() == 0 ? (1u << 20) : std::min(req.max_bytes(), 4u << 20);
      std::string buf(max, '\0');
      in.read(buf.data(), max);
      buf.resize(static_cast<size_t>(in.gcount()));
      r->set_next_offset(req.offset() + buf.size());
      if (buf.size() == max) r->set_finished(false);
      r->set_data(std::move(buf));
    }
  }
  Reply(peer, env, reply);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleCancel(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const std::string& target = env.cancel().target();
  std::vector<std::string> jobs;
  std::vector<std::string> run_ids;
  if (state_.runs.count(target)) {
    jobs = state_.jobs_by_run[target];
    run_ids = {target};
  } else if (state_.jobs.count(target)) {
    jobs = {target};
    run_ids = {state_.jobs[target].run_id};
  } else if (state_.sweeps.count(target)) {
    for (const auto& p : state_.points[target]) {
      run_ids.push_back(p.run_id);
      for (const auto& id : state_.jobs_by_run[p.run_id]) jobs.push_back(id);
    }
  } else {
    return absl::NotFoundError(absl::StrCat("no run, job or sweep '", target, "'"));
  }
  Staged s(this);
  uint32_t count = 0;
  const int64_t now = clock_->NowMs();
  for (const auto& id : jobs) {
    JobRecord& j = s.Job(id);
    if (IsTerminal(j.state)) continue;
    j.state = state::kCancelled;
    j.failure = "cancelled by user";
    j.updated_ms = now;
    ++count;
    Event(s, "job_cancelled", j.run_id, j.id, "", "cancelled by user");
    StageCancelAttempts(s, id);
  }
  // Jobs waiting on a cancelled job can no longer run.
  for (const auto& run_id : run_ids) {
    for (const auto& id : state_.jobs_by_run[run_id]) {
      JobRecord& d = s.Job(id);
      if (d.state != state::kPending) continue;
      d.state = state::kCancelled;
      d.failure = "upstream job cancelled";
      d.updated_ms = now;
      ++count;
      Event(s, "job_cancelled", d.run_id, d.id, "", d.failure);
    }
  }
  for (const auto& run_id : run_ids) FinishRunIfDone(s, run_id);
  proto::Envelope reply;
  reply.mutable_cancel_reply()->set_cancelled(count);
  reply.set_request_id(env.request_id());
  reply.set_sender("coordinator");
  s.outbox.push_back({peer, reply});
  return Commit(s);
}

absl::Status CoordinatorService::HandleWorkers(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  ReplyJson(peer, env, WorkersDocument(state_, clock_->NowMs()));
  return absl::OkStatus();
}

}  // namespace dd2
