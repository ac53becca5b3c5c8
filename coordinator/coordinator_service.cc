#include "coordinator/coordinator_service.h"

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <random>

#include <nlohmann/json.hpp>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "common/protocol.h"
#include "common/run_spec.h"
#include "common/status_macros.h"
#include "common/checkpoint_manifest.h"
#include "coordinator/retention.h"
#include "coordinator/scheduler.h"

namespace dd2 {

using Json = nlohmann::json;

bool IsTerminal(const std::string& s) {
  return s == state::kSucceeded || s == state::kFailed || s == state::kCancelled || s == state::kLost ||
         s == state::kPreempted;
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

// Copies of records being changed by one transition, read through to committed memory.
class CoordinatorService::Staged {
 public:
  explicit Staged(CoordinatorService* svc) : svc_(svc) {}

  RunRecord& Run(const std::string& id) { return Touch(runs, svc_->runs_, id); }
  JobRecord& Job(const std::string& id) { return Touch(jobs, svc_->jobs_, id); }
  AttemptRecord& Attempt(const std::string& id) { return Touch(attempts, svc_->attempts_, id); }
  WorkerRecord& Worker(const std::string& id) { return Touch(workers, svc_->workers_, id); }

  std::map<std::string, RunRecord> runs;
  std::map<std::string, JobRecord> jobs;
  std::map<std::string, AttemptRecord> attempts;
  std::map<std::string, WorkerRecord> workers;
  std::vector<CheckpointRecord> checkpoints;
  std::vector<EventRecord> events;
  std::vector<MetricRecord> metrics;
  // Messages to send once the transition is committed.
  std::vector<std::pair<std::string, proto::Envelope>> outbox;

 private:
  template <typename R>
  static R& Touch(std::map<std::string, R>& staged, const std::map<std::string, R>& committed,
                  const std::string& id) {
    auto it = staged.find(id);
    if (it != staged.end()) return it->second;
    auto c = committed.find(id);
    R& r = staged[id];
    if (c != committed.end()) r = c->second;
    return r;
  }
  CoordinatorService* svc_;
};

CoordinatorService::CoordinatorService(CoordinatorConfig config, JobStore* store, const Clock* clock,
                                       SendFn send)
    : config_(std::move(config)), store_(store), clock_(clock), send_(std::move(send)) {
  started_ms_ = clock_->NowMs();
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
  s.checkpoints = std::move(snap.checkpoints);
  Fold(s);  // what is already stored: indexed, not written again
  // Indexes that need an order the maps do not give: jobs in spec order, attempts by number.
  for (auto& [run_id, run] : runs_) {
    proto::RunSpec spec;
    spec.ParseFromString(run.spec);
    IndexRunJobs(run_id, spec);
  }
  for (const auto& [id, job] : jobs_) {  // jobs added while the run ran (checkpoint evals)
    if (!job_specs_.count(id)) AddDynamicJobIndex(job);
  }
  for (auto& [job_id, ids] : attempts_by_job_) {
    std::sort(ids.begin(), ids.end(), [this](const std::string& x, const std::string& y) {
      return attempts_[x].number < attempts_[y].number;
    });
  }
  const int64_t now = clock_->NowMs();
  for (auto& [id, w] : workers_) {
    if (w.state != state::kLost) live_[id] = WorkerLive{"", now};
  }
  Staged boot(this);
  Event(boot, "coordinator_started", "", "", "",
        absl::StrCat(runs_.size(), " runs, ", active_attempts_.size(), " active attempts recovered"));
  DD2_RETURN_IF_ERROR(Commit(boot));
  // Deletions journaled before a crash are finished now.
  std::vector<CheckpointRecord> pending;
  for (const auto& [job_id, by_step] : checkpoints_) {
    for (const auto& [step, c] : by_step) {
      if (c.state == state::kDeleting) pending.push_back(c);
    }
  }
  FinishDeletions(pending);
  return absl::OkStatus();
}

void CoordinatorService::AddDynamicJobIndex(const JobRecord& job) {
  auto& order = jobs_by_run_[job.run_id];
  job_index_[job.id] = static_cast<int64_t>(order.size());
  order.push_back(job.id);
}

void CoordinatorService::IndexRunJobs(const std::string& run_id, const proto::RunSpec& spec) {
  auto& order = jobs_by_run_[run_id];
  order.clear();
  for (int i = 0; i < spec.jobs_size(); ++i) {
    const std::string id = absl::StrCat(run_id, "/", spec.jobs(i).name());
    order.push_back(id);
    job_index_[id] = i;
    job_specs_[id] = spec.jobs(i);
    for (const auto& dep : spec.jobs(i).after()) dependents_[absl::StrCat(run_id, "/", dep)].push_back(id);
  }
}

void CoordinatorService::Event(Staged& s, const std::string& kind, const std::string& run_id,
                               const std::string& job_id, const std::string& attempt_id,
                               const std::string& detail) {
  s.events.push_back({0, clock_->NowMs(), run_id, job_id, attempt_id, kind, detail});
}

absl::Status CoordinatorService::Commit(Staged& s) {
  StoreTx tx;
  for (auto& [id, r] : s.runs) tx.runs.push_back(r);
  for (auto& [id, r] : s.jobs) tx.jobs.push_back(r);
  for (auto& [id, r] : s.attempts) tx.attempts.push_back(r);
  for (auto& [id, r] : s.workers) tx.workers.push_back(r);
  tx.checkpoints = s.checkpoints;
  tx.events = s.events;
  tx.metrics = s.metrics;
  absl::Status st = store_->Apply(tx);
  if (!st.ok()) return st;
  Fold(s);
  for (auto& [peer, env] : s.outbox) send_(peer, env);
  return absl::OkStatus();
}

void CoordinatorService::Fold(const Staged& s) {
  for (auto& [id, r] : s.runs) {
    run_by_submission_[r.submission_id] = id;
    runs_[id] = r;
  }
  for (auto& [id, r] : s.jobs) {
    auto old = jobs_.find(id);
    const bool was_open = old != jobs_.end() && !IsTerminal(old->second.state);
    open_jobs_[r.run_id] += static_cast<int64_t>(!IsTerminal(r.state)) - static_cast<int64_t>(was_open);
    if (r.state == state::kReady) {
      ready_.insert(id);
    } else {
      ready_.erase(id);
    }
    jobs_[id] = r;
  }
  for (auto& [id, r] : s.attempts) {
    if (!attempts_.count(id)) attempts_by_job_[r.job_id].push_back(id);
    attempts_[id] = r;
    if (IsTerminal(r.state)) {
      active_attempts_.erase(id);
      finished_ranks_.erase(id);
    } else {
      active_attempts_.insert(id);
    }
  }
  for (auto& [id, r] : s.workers) workers_[id] = r;
  for (auto& c : s.checkpoints) checkpoints_[c.job_id][c.step] = c;
  for (auto& m : s.metrics) latest_metrics_[m.job_id][m.key] = m.value;
  dirty_ = true;
}

proto::Envelope CoordinatorService::CancelAttemptMessage(const std::string& attempt_id) const {
  proto::Envelope env;
  env.set_sender("coordinator");
  env.mutable_cancel_attempt()->set_attempt_id(attempt_id);
  env.mutable_cancel_attempt()->set_grace_ms(static_cast<uint32_t>(config_.cancel_grace_ms));
  return env;
}

void CoordinatorService::Reply(const std::string& peer, const proto::Envelope& request,
                               proto::Envelope reply) {
  reply.set_request_id(request.request_id());
  reply.set_sender("coordinator");
  send_(peer, reply);
}

std::vector<std::string> CoordinatorService::ActiveAttemptsOf(const std::string& worker_id) const {
  std::vector<std::string> out;
  for (const auto& id : active_attempts_) {
    const auto& a = attempts_.at(id);
    for (absl::string_view w : absl::StrSplit(a.worker_ids, ',')) {
      if (w == worker_id) {
        out.push_back(id);
        break;
      }
    }
  }
  return out;
}

static bool Holds(const AttemptRecord& a, const std::string& worker_id) {
  for (absl::string_view w : absl::StrSplit(a.worker_ids, ',')) {
    if (w == worker_id) return true;
  }
  return false;
}

std::string CoordinatorService::LogPath(const std::string& attempt_id) const {
  // "<run>/<job>#<n>" -> logs/<run>/<job>/<n>.log
  std::string path = attempt_id;
  std::replace(path.begin(), path.end(), '#', '/');
  return absl::StrCat(config_.home, "/logs/", path, ".log");
}

// ---------------------------------------------------------------- frames

void CoordinatorService::HandleFrame(const std::string& peer, std::string_view frame) {
  ++frames_;
  auto decoded = DecodeEnvelope(frame);
  if (!decoded.ok()) {
    ++malformed_frames_;
    return;
  }
  const proto::Envelope& env = *decoded;
  // Any message from a registered worker counts as liveness.
  if (auto it = live_.find(env.sender()); it != live_.end() && !it->second.peer.empty() &&
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
    if (absl::IsInvalidArgument(st) && env.body_case() != proto::Envelope::kSubmit) ++malformed_frames_;
    if (is_request || !absl::IsInvalidArgument(st)) send_(peer, ErrorReply(env, st));
  }
}

void CoordinatorService::Schedule() {
  MarkUnreachableWorkersLost();
  if (dirty_) ScheduleReady();
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
  for (const auto& [id, live] : live_) {
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
  Event(s, known ? "worker_reregistered" : "worker_registered", "", "", "", h.worker_id());
  proto::Envelope welcome;
  welcome.mutable_welcome()->set_heartbeat_interval_ms(static_cast<uint32_t>(config_.heartbeat_interval_ms));
  welcome.mutable_welcome()->set_heartbeat_liveness(static_cast<uint32_t>(config_.heartbeat_liveness));
  std::set<std::string> held;
  for (const auto& a : h.attempts()) {
    held.insert(a.attempt_id());
    auto it = attempts_.find(a.attempt_id());
    if (it == attempts_.end() || IsTerminal(it->second.state) || !Holds(it->second, h.worker_id())) {
      welcome.mutable_welcome()->add_stop_attempts(a.attempt_id());  // fenced: not ours any more
      continue;
    }
    const AttemptRecord& att = it->second;
    Event(s, "attempt_reattached", jobs_[att.job_id].run_id, att.job_id, att.id, h.worker_id());
    if (jobs_[att.job_id].state == state::kCancelled) {
      proto::Envelope cancel = CancelAttemptMessage(att.id);
      s.outbox.push_back({peer, cancel});
    }
  }
  // Attempts we think this worker runs but it does not hold: it restarted, or never got them.
  for (const auto& id : ActiveAttemptsOf(h.worker_id())) {
    if (held.count(id)) continue;
    AttemptRecord& a = s.Attempt(id);
    a.state = state::kLost;
    a.cause = "worker lost";
    a.finished_ms = now;
    Event(s, "attempt_lost", jobs_[a.job_id].run_id, a.job_id, id, "worker restarted without it");
    if (s.Job(a.job_id).state != state::kCancelled) RetryOrFail(s, a.job_id, "worker lost", true);
    FinishRunIfDone(s, s.Job(a.job_id).run_id);
  }
  welcome.set_request_id(env.request_id());
  welcome.set_sender("coordinator");
  s.outbox.insert(s.outbox.begin(), {peer, welcome});
  DD2_RETURN_IF_ERROR(Commit(s));
  live_[h.worker_id()] = WorkerLive{peer, now};
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleHeartbeat(const std::string& peer, const proto::Envelope& env) {
  auto it = live_.find(env.sender());
  auto w = workers_.find(env.sender());
  if (it == live_.end() || it->second.peer.empty() || w == workers_.end() ||
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
    auto a = attempts_.find(id);
    if (a == attempts_.end() || IsTerminal(a->second.state) || !Holds(a->second, env.sender())) {
      ack.mutable_heartbeat_ack()->add_stop_attempts(id);
    }
  }
  ack.mutable_heartbeat_ack();
  Reply(peer, env, ack);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleAttemptStarted(const proto::Envelope& env) {
  const std::string& id = env.attempt_started().attempt_id();
  if (!active_attempts_.count(id) || !Holds(attempts_[id], env.sender())) return absl::OkStatus();
  if (attempts_[id].state != state::kAssigned) return absl::OkStatus();  // duplicate
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
  if (!active_attempts_.count(p.attempt_id()) || !Holds(attempts_[p.attempt_id()], env.sender())) {
    return absl::OkStatus();
  }
  Staged s(this);
  JobRecord& j = s.Job(attempts_[p.attempt_id()].job_id);
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
  auto it = attempts_.find(c.attempt_id());
  if (it == attempts_.end() || !Holds(it->second, env.sender())) return absl::OkStatus();
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
  if (!active_attempts_.count(f.attempt_id()) || !Holds(attempts_[f.attempt_id()], env.sender())) {
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
  if (ok && ranks.size() > 1) {
    auto& done = finished_ranks_[a.id];
    done.insert(env.sender());
    if (done.size() < ranks.size()) {
      Reply(peer, env, ack);
      return absl::OkStatus();
    }
  }
  a.finished_ms = now;
  a.exit_code = f.exit_code();
  a.signal = f.signal();
  if (job.state == state::kCancelled || f.cancelled()) {
    a.state = state::kCancelled;
    a.cause = "cancelled";
  } else if (f.preempted()) {
    a.state = state::kPreempted;
    a.cause = "preempted";
    job.state = state::kReady;  // at once, and no retry is used
    job.failure.clear();
    job.updated_ms = now;
    Event(s, "attempt_preempted", job.run_id, job.id, a.id,
          absl::StrCat("rank ", env.sender(), " preempted; rescheduled, retry budget unchanged"));
  } else if (ranks.size() > 1 && absl::StartsWith(f.cause(), "gang peer lost")) {
    a.state = state::kLost;  // another rank went away: infrastructure, not the job's fault
    a.cause = f.cause().substr(0, 512);
    Event(s, "attempt_lost", job.run_id, job.id, a.id, a.cause);
    RetryOrFail(s, job.id, a.cause, true);
  } else if (ok) {
    a.state = state::kSucceeded;
    job.state = state::kSucceeded;
    job.failure.clear();
    job.updated_ms = now;
    Event(s, "job_succeeded", job.run_id, job.id, a.id, "");
    PromoteDependents(s, job.id);
    // An eval of a checkpoint scores it (keep_best may read that) and releases its pin.
    if (auto target = CheckpointEvalTarget(job)) {
      retention_job = absl::StrCat(job.run_id, "/", target->first);
      auto it = checkpoints_.find(retention_job);
      if (it != checkpoints_.end() && it->second.count(target->second)) {
        CheckpointRecord c = it->second.at(target->second);
        Json m = Json::parse(c.metrics_json, nullptr, false);
        if (!m.is_object()) m = Json::object();
        for (const auto& [k, v] : latest_metrics_[job.id]) m[k] = v;
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
  // Any other rank of a gang stops with it.
  for (const auto& w : ranks) {
    if (w == env.sender() || !live_.count(w) || live_[w].peer.empty()) continue;
    if (a.state == state::kSucceeded) continue;
    proto::Envelope cancel = CancelAttemptMessage(a.id);
    s.outbox.push_back({live_[w].peer, cancel});
  }
  Event(s, "attempt_finished", job.run_id, job.id, a.id, a.state);
  FinishRunIfDone(s, job.run_id);
  ack.set_request_id(env.request_id());
  ack.set_sender("coordinator");
  s.outbox.push_back({peer, ack});
  DD2_RETURN_IF_ERROR(Commit(s));
  return retention_job.empty() ? absl::OkStatus() : ApplyRetention(retention_job);
}

void CoordinatorService::RetryOrFail(Staged& s, const std::string& job_id, const std::string& cause,
                                     bool infra) {
  JobRecord& job = s.Job(job_id);
  int64_t failed = 0, lost = 0;
  for (const auto& id : attempts_by_job_[job_id]) {
    const AttemptRecord& a = s.attempts.count(id) ? s.attempts[id] : attempts_[id];
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
    for (const auto& child : dependents_[id]) {
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
  for (const auto& child : dependents_[job_id]) {
    JobRecord& d = s.Job(child);
    if (d.state != state::kPending) continue;
    Json after = Json::parse(d.after_json, nullptr, false);
    bool all = true;
    for (const auto& dep : after) {
      if (s.Job(absl::StrCat(d.run_id, "/", dep.get<std::string>())).state != state::kSucceeded) all = false;
    }
    if (all) {
      d.state = state::kReady;
      d.updated_ms = clock_->NowMs();
    }
  }
}

void CoordinatorService::FinishRunIfDone(Staged& s, const std::string& run_id) {
  RunRecord& run = s.Run(run_id);
  if (IsTerminal(run.state)) return;
  // Open jobs = committed count, corrected by this transition's staged jobs.
  int64_t open = open_jobs_[run_id];
  for (const auto& [id, j] : s.jobs) {
    if (j.run_id != run_id) continue;
    auto old = jobs_.find(id);
    const bool was_open = old != jobs_.end() && !IsTerminal(old->second.state);
    open += static_cast<int64_t>(!IsTerminal(j.state)) - static_cast<int64_t>(was_open);
  }
  if (open > 0) return;
  bool all_succeeded = true, any_failed = false;
  for (const auto& id : jobs_by_run_[run_id]) {
    const JobRecord& j = s.Job(id);
    // A cancelled job whose attempt still runs keeps the run open until it stops.
    for (const auto& aid : attempts_by_job_[id]) {
      const AttemptRecord& a = s.attempts.count(aid) ? s.attempts[aid] : attempts_[aid];
      if (!IsTerminal(a.state)) return;
    }
    all_succeeded = all_succeeded && j.state == state::kSucceeded;
    any_failed = any_failed || j.state == state::kFailed;
  }
  run.state = all_succeeded ? state::kSucceeded : any_failed ? state::kFailed : state::kCancelled;
  run.finished_ms = clock_->NowMs();
  Event(s, "run_finished", run_id, "", "", run.state);
}

void CoordinatorService::MarkLost(const std::string& worker_id, const std::string& cause) {
  Staged s(this);
  s.Worker(worker_id).state = state::kLost;
  Event(s, "worker_lost", "", "", "", absl::StrCat(worker_id, ": ", cause));
  const int64_t now = clock_->NowMs();
  for (const auto& id : ActiveAttemptsOf(worker_id)) {
    AttemptRecord& a = s.Attempt(id);
    a.state = state::kLost;
    a.cause = "worker lost";
    a.finished_ms = now;
    JobRecord& job = s.Job(a.job_id);
    Event(s, "attempt_lost", job.run_id, job.id, id, worker_id);
    if (job.state != state::kCancelled) RetryOrFail(s, job.id, "worker lost", true);
    for (absl::string_view w : absl::StrSplit(a.worker_ids, ',')) {
      std::string other(w);
      if (other == worker_id || !live_.count(other) || live_[other].peer.empty()) continue;
      proto::Envelope cancel = CancelAttemptMessage(id);
      s.outbox.push_back({live_[other].peer, cancel});
    }
    FinishRunIfDone(s, job.run_id);
  }
  if (Commit(s).ok()) live_.erase(worker_id);
}

void CoordinatorService::Tick() {
  const int64_t now = clock_->NowMs();
  std::vector<std::string> lost;
  for (auto& [id, live] : live_) {
    const int64_t silent = now - live.last_seen_ms;
    const std::string& st = workers_[id].state;
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
  for (const auto& [id, job] : jobs_) {
    if (job.state == state::kRetrying && job.not_before_ms <= now) {
      Staged s(this);
      s.Job(id).state = state::kReady;
      s.Job(id).updated_ms = now;
      Commit(s).IgnoreError();
    }
  }
  Schedule();
}

void CoordinatorService::ScheduleReady() {
  dirty_ = false;
  if (ready_.empty()) return;
  std::map<std::string, int64_t> used;
  for (const auto& id : active_attempts_) {
    for (absl::string_view w : absl::StrSplit(attempts_[id].worker_ids, ',')) ++used[std::string(w)];
  }
  std::vector<WorkerSlots> slots;
  bool any_free = false;
  for (const auto& [id, live] : live_) {
    const WorkerRecord& w = workers_[id];
    if (live.peer.empty() || w.state != state::kAlive) continue;
    slots.push_back({id, w.device, w.slots, w.slots - used[id]});
    any_free = any_free || slots.back().free > 0;
  }
  if (!any_free) return;
  std::vector<QueuedJob> queue;
  for (const auto& id : ready_) {
    const JobRecord& job = jobs_[id];
    const RunRecord& run = runs_[job.run_id];
    queue.push_back({id, run.priority, job.priority, run.seq, job_index_[id], job.workers, job.device});
  }
  for (const Placement& p : dd2::Schedule(slots, queue)) {
    Staged s(this);
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
      rendezvous = absl::StrCat("tcp://", workers_[p.worker_ids[0]].host, ":", port);
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
      s.outbox.push_back({live_[w].peer, assign});
    }
    if (!Commit(s).ok()) break;
  }
  dirty_ = false;
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
  auto it = attempts_.find(c.attempt_id());
  // Only the job's newest attempt, held by the sender, may commit: a fenced straggler must not.
  if (it == attempts_.end() || !Holds(it->second, env.sender()) ||
      attempts_by_job_[it->second.job_id].back() != c.attempt_id()) {
    return acked(absl::OkStatus());
  }
  if (c.path().empty() || c.sha256().size() != 64) {
    return acked(absl::InvalidArgumentError("CheckpointCommitted needs a path and a 64-hex-digit sha256"));
  }
  const AttemptRecord& a = it->second;
  const JobRecord& job = jobs_[a.job_id];
  const int64_t step = static_cast<int64_t>(c.step());
  int64_t created_ms = clock_->NowMs();
  if (auto k = checkpoints_[a.job_id].find(step); k != checkpoints_[a.job_id].end()) {
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
  if (!eval_id.empty()) AddDynamicJobIndex(jobs_[eval_id]);
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
  if (!active_attempts_.count(r.attempt_id()) || !Holds(attempts_[r.attempt_id()], env.sender())) {
    return absl::OkStatus();
  }
  const AttemptRecord& a = attempts_[r.attempt_id()];
  Staged s(this);
  Event(s, "attempt_resumed", jobs_[a.job_id].run_id, a.job_id, a.id, absl::StrCat("step ", r.step()));
  return Commit(s);
}

std::string CoordinatorService::MaybeAddCheckpointEval(Staged& s, const JobRecord& job, int64_t step) {
  auto spec = job_specs_.find(job.id);
  if (spec == job_specs_.end() || !spec->second.has_eval_every()) return "";
  const proto::EvalEvery& every = spec->second.eval_every();
  if (every.steps() == 0 || step % static_cast<int64_t>(every.steps()) != 0) return "";
  const std::string name = absl::StrCat(job.name, "-eval-", step);
  const std::string id = absl::StrCat(job.run_id, "/", name);
  if (jobs_.count(id) || s.jobs.count(id)) return "";
  Json params = Json::parse(every.params_json(), nullptr, false);
  if (!params.is_object()) return "";
  params["generator"] = job.name;
  params["checkpoint_step"] = step;
  JobRecord& e = s.Job(id);
  e = JobRecord{id, job.run_id, name, "eval", params.dump(), Json::array({job.name}).dump(), 1, job.device, 0,
                job.priority - 1, state::kReady};
  e.updated_ms = clock_->NowMs();
  Event(s, "job_added", job.run_id, id, "", absl::StrCat("eval of ", job.name, " at step ", step));
  return id;
}

std::vector<CheckpointRecord> CoordinatorService::StageRetention(Staged& s, const std::string& job_id) {
  auto spec = job_specs_.find(job_id);
  if (spec == job_specs_.end() || !spec->second.has_retention()) return {};
  const proto::Retention& r = spec->second.retention();
  RetentionPolicy policy{r.keep_latest(), r.keep_best(), r.metric(), r.mode() == "max"};
  std::vector<RetainedCheckpoint> committed;
  for (const auto& [step, c] : checkpoints_[job_id]) {
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
  // Pinned: checkpoints an unfinished eval reads.
  std::set<int64_t> pinned;
  const JobRecord& job = jobs_[job_id];
  for (const auto& id : jobs_by_run_[job.run_id]) {
    const JobRecord& j = jobs_[id];
    if (IsTerminal(j.state)) continue;
    if (auto target = CheckpointEvalTarget(j); target && target->first == job.name) pinned.insert(target->second);
  }
  std::vector<CheckpointRecord> victims;
  for (int64_t step : CheckpointsToDelete(committed, policy, pinned)) {
    CheckpointRecord c = checkpoints_[job_id][step];
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
    absl::Status st = RemoveCheckpoint(c.path);
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
  const std::string& run_id = env.checkpoints().run_id();
  if (!runs_.count(run_id)) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
  Json list = Json::array();
  for (const auto& job_id : jobs_by_run_[run_id]) {
    for (const auto& [step, c] : checkpoints_[job_id]) {
      list.push_back({{"job", jobs_[job_id].name}, {"step", step}, {"state", c.state}, {"path", c.path},
                      {"sha256", c.sha256}, {"bytes", c.bytes}, {"attempt", c.attempt_id},
                      {"created_ms", c.created_ms}, {"metrics", Json::parse(c.metrics_json, nullptr, false)}});
    }
  }
  proto::Envelope reply;
  reply.mutable_json_reply()->set_json(Json{{"run", run_id}, {"checkpoints", list}}.dump());
  Reply(peer, env, reply);
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
  if (auto it = run_by_submission_.find(submission); it != run_by_submission_.end()) {
    reply.mutable_submit_reply()->set_run_id(it->second);
    reply.mutable_submit_reply()->set_existed(true);
    Reply(peer, env, reply);
    return absl::OkStatus();
  }
  DD2_RETURN_IF_ERROR(ValidateRunSpec(req.spec()));
  const int64_t now = clock_->NowMs();
  Staged s(this);
  const int64_t seq = next_seq_;
  const std::string run_id = absl::StrCat(req.spec().name(), "-", seq);
  s.Run(run_id) = RunRecord{run_id, submission, req.spec().name(), req.spec().SerializeAsString(),
                            state::kRunning, req.spec().priority(), seq, now, 0};
  for (const auto& js : req.spec().jobs()) {
    const std::string job_id = absl::StrCat(run_id, "/", js.name());
    Json after = Json::array();
    for (const auto& a : js.after()) after.push_back(a);
    s.Job(job_id) = JobRecord{job_id, run_id, js.name(), js.type(), js.params_json(), after.dump(),
                              js.resources().workers(),
                              js.resources().device().empty() ? "any" : js.resources().device(),
                              js.retries(), js.priority(),
                              js.after().empty() ? state::kReady : state::kPending};
    s.Job(job_id).updated_ms = now;
  }
  Event(s, "run_submitted", run_id, "", "", absl::StrCat(req.spec().jobs_size(), " jobs from ", req.spec().source()));
  reply.mutable_submit_reply()->set_run_id(run_id);
  reply.set_request_id(env.request_id());
  reply.set_sender("coordinator");
  s.outbox.push_back({peer, reply});
  DD2_RETURN_IF_ERROR(Commit(s));
  next_seq_ = seq + 1;
  IndexRunJobs(run_id, req.spec());
  return absl::OkStatus();
}

namespace {

Json JobJson(const JobRecord& j, const std::map<std::string, double>* metrics) {
  Json out = {{"id", j.id},       {"name", j.name},       {"type", j.type},
              {"state", j.state}, {"attempts", j.attempts}, {"step", j.step},
              {"total", j.total}, {"failure", j.failure},   {"updated_ms", j.updated_ms},
              {"workers", j.workers}, {"device", j.device}, {"retries", j.retries},
              {"after", Json::parse(j.after_json, nullptr, false)}};
  Json m = Json::object();
  if (metrics) for (const auto& [k, v] : *metrics) m[k] = v;
  out["metrics"] = m;
  return out;
}

Json AttemptJson(const AttemptRecord& a) {
  std::vector<std::string> workers = absl::StrSplit(a.worker_ids, ',', absl::SkipEmpty());
  return {{"id", a.id},           {"number", a.number},       {"state", a.state},
          {"workers", workers},   {"started_ms", a.started_ms}, {"finished_ms", a.finished_ms},
          {"exit_code", a.exit_code}, {"signal", a.signal},   {"cause", a.cause}};
}

}  // namespace

absl::Status CoordinatorService::HandleStatus(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const std::string& run_id = env.status().run_id();
  Json out;
  auto run_json = [&](const RunRecord& r) {
    Json counts = Json::object();
    int64_t done = 0, total = 0;
    Json jobs = Json::array();
    for (const auto& id : jobs_by_run_[r.id]) {
      const JobRecord& j = jobs_[id];
      counts[j.state] = counts.value(j.state, 0) + 1;
      ++total;
      if (j.state == state::kSucceeded) ++done;
      auto m = latest_metrics_.find(id);
      jobs.push_back(JobJson(j, m == latest_metrics_.end() ? nullptr : &m->second));
    }
    return Json{{"id", r.id},         {"name", r.name},
                {"state", r.state},   {"submission_id", r.submission_id},
                {"priority", r.priority}, {"created_ms", r.created_ms},
                {"finished_ms", r.finished_ms}, {"jobs_total", total},
                {"jobs_succeeded", done}, {"job_states", counts}, {"jobs", jobs}};
  };
  if (!run_id.empty()) {
    auto it = runs_.find(run_id);
    if (it == runs_.end()) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
    out = {{"run", run_json(it->second)}};
  } else {
    std::vector<const RunRecord*> runs;
    for (const auto& [id, r] : runs_) runs.push_back(&r);
    std::sort(runs.begin(), runs.end(), [](auto* a, auto* b) { return a->seq < b->seq; });
    Json list = Json::array();
    for (const auto* r : runs) list.push_back(run_json(*r));
    Json workers = {{"alive", 0}, {"suspect", 0}, {"lost", 0}};
    for (const auto& [id, w] : workers_) workers[w.state] = workers.value(w.state, 0) + 1;
    out = {{"coordinator", {{"endpoint", endpoint_},
                            {"uptime_ms", clock_->NowMs() - started_ms_},
                            {"frames", frames_},
                            {"malformed_frames", malformed_frames_},
                            {"send_failures", send_failures_},
                            {"workers", workers}}},
           {"runs", list}};
  }
  proto::Envelope reply;
  reply.mutable_json_reply()->set_json(out.dump());
  Reply(peer, env, reply);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleJobs(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const std::string& run_id = env.jobs().run_id();
  if (!runs_.count(run_id)) return absl::NotFoundError(absl::StrCat("no run '", run_id, "'"));
  Json jobs = Json::array();
  for (const auto& id : jobs_by_run_[run_id]) {
    auto m = latest_metrics_.find(id);
    Json j = JobJson(jobs_[id], m == latest_metrics_.end() ? nullptr : &m->second);
    Json attempts = Json::array();
    for (const auto& aid : attempts_by_job_[id]) attempts.push_back(AttemptJson(attempts_[aid]));
    j["attempts_detail"] = attempts;
    jobs.push_back(j);
  }
  proto::Envelope reply;
  reply.mutable_json_reply()->set_json(Json{{"run_id", run_id}, {"state", runs_[run_id].state}, {"jobs", jobs}}.dump());
  Reply(peer, env, reply);
  return absl::OkStatus();
}

absl::Status CoordinatorService::HandleLogs(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const proto::LogsRequest& req = env.logs();
  auto job = jobs_.find(req.job_id());
  if (job == jobs_.end()) return absl::NotFoundError(absl::StrCat("no job '", req.job_id(), "'"));
  proto::Envelope reply;
  auto* r = reply.mutable_logs_reply();
  const auto& attempts = attempts_by_job_[req.job_id()];
  r->set_finished(IsTerminal(job->second.state) &&
                  (attempts.empty() || IsTerminal(attempts_[attempts.back()].state)));
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
  std::string run_id;
  if (runs_.count(target)) {
    jobs = jobs_by_run_[target];
    run_id = target;
  } else if (jobs_.count(target)) {
    jobs = {target};
    run_id = jobs_[target].run_id;
  } else {
    return absl::NotFoundError(absl::StrCat("no run or job '", target, "'"));
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
    for (const auto& aid : attempts_by_job_[id]) {
      if (!active_attempts_.count(aid)) continue;
      for (absl::string_view w : absl::StrSplit(attempts_[aid].worker_ids, ',')) {
        auto live = live_.find(std::string(w));
        if (live == live_.end() || live->second.peer.empty()) continue;
        proto::Envelope cancel = CancelAttemptMessage(aid);
        s.outbox.push_back({live->second.peer, cancel});
      }
    }
  }
  // Jobs waiting on a cancelled job can no longer run.
  for (const auto& id : jobs_by_run_[run_id]) {
    JobRecord& d = s.Job(id);
    if (d.state != state::kPending) continue;
    d.state = state::kCancelled;
    d.failure = "upstream job cancelled";
    d.updated_ms = now;
    ++count;
    Event(s, "job_cancelled", d.run_id, d.id, "", d.failure);
  }
  FinishRunIfDone(s, run_id);
  proto::Envelope reply;
  reply.mutable_cancel_reply()->set_cancelled(count);
  reply.set_request_id(env.request_id());
  reply.set_sender("coordinator");
  s.outbox.push_back({peer, reply});
  return Commit(s);
}

absl::Status CoordinatorService::HandleWorkers(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  Json list = Json::array();
  const int64_t now = clock_->NowMs();
  for (const auto& [id, w] : workers_) {
    auto active = ActiveAttemptsOf(id);
    auto live = live_.find(id);
    list.push_back({{"id", id},         {"host", w.host},   {"device", w.device},
                    {"device_index", w.device_index}, {"slots", w.slots},
                    {"used", active.size()}, {"state", w.state}, {"pid", w.pid},
                    {"registered_ms", w.registered_ms},
                    {"connected", live != live_.end() && !live->second.peer.empty()},
                    {"silent_ms", live != live_.end() ? now - live->second.last_seen_ms : -1},
                    {"attempts", active}});
  }
  proto::Envelope reply;
  reply.mutable_json_reply()->set_json(Json{{"workers", list}}.dump());
  Reply(peer, env, reply);
  return absl::OkStatus();
}

}  // namespace dd2
