#include "worker/agent.h"

#include "worker/job_registry.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <optional>
#include <vector>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "common/fault_point.h"
#include "common/process.h"
#include "common/json_fields.h"
#include "common/protocol.h"
#include "common/slurm.h"
#include "common/transport.h"

namespace dd2 {
namespace {

int64_t NowMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string SelfExe() {
  std::vector<char> buf(4096);
  ssize_t n = ::readlink("/proc/self/exe", buf.data(), buf.size() - 1);
  return n > 0 ? std::string(buf.data(), static_cast<size_t>(n)) : "dd2-worker";
}

std::string SafeName(std::string s) {
  for (char& c : s) if (c == '/' || c == '#') c = '_';
  return s;
}

// Assign.inputs as the JSON object the job child's --inputs takes.
std::string InputsJson(const proto::Assign& assign) {
  nlohmann::json j = nlohmann::json::object();
  for (const auto& [name, dir] : assign.inputs()) j[name] = dir;
  return j.dump();
}

}  // namespace

WorkerAgent::WorkerAgent(WorkerConfig config)
    : config_(std::move(config)), context_(1), socket_(context_, zmq::socket_type::dealer) {
  RegisterBuiltinJobTypes();
}

void WorkerAgent::Send(proto::Envelope env) {
  env.set_sender(config_.worker_id);
  if (env.request_id() == 0) env.set_request_id(next_request_id_++);
  // Dropped when the coordinator is unreachable (ZMQ_IMMEDIATE): heartbeats and Hello are
  // resent on the next tick; finished and checkpoint reports stay in unacked_ and
  // unacked_checkpoints_ until acknowledged.
  SendFrames(socket_, {EncodeEnvelope(std::move(env))}).IgnoreError();
}

void WorkerAgent::SendHello() {
  proto::Envelope env;
  auto* h = env.mutable_hello();
  h->set_worker_id(config_.worker_id);
  h->set_host(config_.advertise_host);
  h->set_device(config_.device);
  h->set_device_index(config_.device_index);
  h->set_slots(static_cast<uint32_t>(config_.slots));
  h->set_pid(static_cast<uint32_t>(::getpid()));
  if (!config_.slurm.job_id().empty()) *h->mutable_slurm() = config_.slurm;
  for (const auto& [id, c] : children_) {
    if (c.fenced) continue;
    auto* a = h->add_attempts();
    a->set_attempt_id(id);
  }
  for (const auto& [id, f] : unacked_) {
    auto* a = h->add_attempts();
    a->set_attempt_id(id);
    a->set_finished(true);
  }
  Send(std::move(env));
}

absl::Status WorkerAgent::Run() {
  std::error_code ec;
  std::filesystem::create_directories(config_.work_dir + "/attempts", ec);
  if (ec) return absl::UnavailableError(absl::StrCat("cannot create ", config_.work_dir, ": ", ec.message()));
  absl::Status st = WatchHandshakes(context_, socket_, handshakes_);
  if (st.ok()) {
    st = ConnectDealer(socket_, config_.coordinator, config_.worker_id, /*immediate=*/true,
                       config_.curve ? &*config_.curve : nullptr);
  }
  if (!st.ok()) return st;
  last_heard_ms_ = NowMs();
  idle_since_ms_ = NowMs();
  int64_t drain_until_ms = 0;  // set by Stop(): preempted attempts report, then we exit
  // Acts on the signal flags. Called again just before children are reaped: under srun a signal
  // reaches the job children too, and their exit must not be reported before its SLURM cause is
  // known.
  auto on_signals = [&] {
    if ((stop_ || (!config_.slurm.job_id().empty() && preempt_)) && drain_until_ms == 0) {
      PreemptChildren(/*grace_signal=*/!stop_);
      preempt_ = false;
      draining_ = true;
      SendHeartbeat();  // tell the coordinator now (even mid re-registration): no new work here
      drain_until_ms = NowMs() + config_.shutdown_grace_ms;
    }
    if (preempt_.exchange(false)) PreemptChildren(/*grace_signal=*/true);
  };
  while (true) {
    on_signals();
    const bool idle = children_.empty() && unacked_.empty() && unacked_checkpoints_.empty();
    if (drain_until_ms > 0 && (idle || NowMs() >= drain_until_ms)) break;
    if (!idle || !registered_) idle_since_ms_ = NowMs();
    if (config_.idle_exit_ms > 0 && drain_until_ms == 0 && NowMs() - idle_since_ms_ >= config_.idle_exit_ms) {
      std::fprintf(stderr, "dd2-worker: idle for %lld ms; exiting\n", static_cast<long long>(config_.idle_exit_ms));
      stop_ = true;
      continue;
    }
    std::vector<zmq::pollitem_t> items;
    items.push_back({socket_.handle(), 0, ZMQ_POLLIN, 0});
    for (auto& [id, c] : children_) {
      if (c.out_fd >= 0) items.push_back({nullptr, c.out_fd, ZMQ_POLLIN, 0});
      if (c.progress_fd >= 0) items.push_back({nullptr, c.progress_fd, ZMQ_POLLIN, 0});
    }
    try {
      zmq::poll(items.data(), items.size(), std::chrono::milliseconds(50));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) return absl::UnavailableError(absl::StrCat("poll: ", e.what()));
    }
    const std::string failure_before = handshake_failure_;
    ReadHandshakeEvents(handshakes_, &handshake_failure_);
    if (!handshake_failure_.empty() && handshake_failure_ != failure_before) {
      std::fprintf(stderr, "dd2-worker: cannot connect to %s: %s; retrying\n", config_.coordinator.c_str(),
                   handshake_failure_.c_str());
    }
    while (true) {
      auto frames = RecvFrames(socket_);
      if (!frames.ok() || !frames->has_value()) break;
      if ((*frames)->empty()) continue;
      auto env = DecodeEnvelope((*frames)->back());
      if (!env.ok()) {
        std::fprintf(stderr, "dd2-worker: dropped malformed frame from coordinator: %s\n",
                     std::string(env.status().message()).c_str());
        continue;
      }
      last_heard_ms_ = NowMs();
      HandleMessage(*env);
    }
    for (auto& [id, c] : children_) {
      DrainOutput(c);
      DrainProgress(c);
    }
    on_signals();
    ReapChildren();
    const int64_t now = NowMs();
    for (auto& [id, c] : children_) {
      if (c.kill_at_ms > 0 && now >= c.kill_at_ms) {
        ::kill(-c.pid, SIGKILL);
        c.kill_at_ms = 0;
      }
    }
    if (registered_ && now - last_heard_ms_ > config_.heartbeat_interval_ms * config_.heartbeat_liveness) {
      std::fprintf(stderr, "dd2-worker: coordinator silent for %lld ms; registering again\n",
                   static_cast<long long>(now - last_heard_ms_));
      registered_ = false;
      last_heard_ms_ = now;
    }
    if (now >= next_heartbeat_ms_) {
      next_heartbeat_ms_ = now + config_.heartbeat_interval_ms;
      if (!registered_) {
        SendHello();
        if (draining_) SendHeartbeat();  // Hello makes it alive again: say at once that it stops
      } else {
        SendHeartbeat();
        ResendUnacked();
      }
    }
  }
  // Children still running after the grace: the coordinator finds this worker lost and
  // retries their attempts elsewhere.
  for (auto& [id, c] : children_) {
    ::kill(-c.pid, SIGKILL);
    ::waitpid(c.pid, nullptr, 0);
  }
  return absl::OkStatus();
}

void WorkerAgent::HandleMessage(const proto::Envelope& env) {
  switch (env.body_case()) {
    case proto::Envelope::kWelcome: {
      registered_ = true;
      if (env.welcome().heartbeat_interval_ms() > 0) config_.heartbeat_interval_ms = env.welcome().heartbeat_interval_ms();
      if (env.welcome().heartbeat_liveness() > 0) config_.heartbeat_liveness = env.welcome().heartbeat_liveness();
      for (const auto& id : env.welcome().stop_attempts()) {
        std::fprintf(stderr, "dd2-worker: %s is no longer this worker's (fenced by the coordinator); stopping it\n",
                     id.c_str());
        unacked_.erase(id);
        CancelChild(id, 0, true);
      }
      // Reports held across a coordinator restart go out now.
      ResendUnacked();
      break;
    }
    case proto::Envelope::kHeartbeatAck:
      for (const auto& id : env.heartbeat_ack().stop_attempts()) CancelChild(id, 0, true);
      break;
    case proto::Envelope::kReRegister:
      registered_ = false;
      next_heartbeat_ms_ = 0;
      break;
    case proto::Envelope::kAssign:
      if (registered_) StartAttempt(env.assign());
      break;
    case proto::Envelope::kCancelAttempt:
      CancelChild(env.cancel_attempt().attempt_id(), env.cancel_attempt().grace_ms(), false);
      break;
    case proto::Envelope::kFinishedAck:
      unacked_.erase(env.finished_ack().attempt_id());
      break;
    case proto::Envelope::kCheckpointAck:
      unacked_checkpoints_.erase({env.checkpoint_ack().attempt_id(), env.checkpoint_ack().step()});
      break;
    case proto::Envelope::kError:
      std::fprintf(stderr, "dd2-worker: coordinator refused: %s\n", env.error().message().c_str());
      if (env.error().code() == static_cast<int>(absl::StatusCode::kFailedPrecondition)) stop_ = true;
      break;
    default:
      std::fprintf(stderr, "dd2-worker: ignored unexpected message type %d\n", env.body_case());
  }
}

void WorkerAgent::SendHeartbeat() {
  proto::Envelope hb;
  hb.mutable_heartbeat()->set_worker_id(config_.worker_id);
  hb.mutable_heartbeat()->set_draining(draining_);
  for (const auto& [id, c] : children_) {
    if (!c.fenced) hb.mutable_heartbeat()->add_running_attempts(id);
  }
  Send(std::move(hb));
}

void WorkerAgent::AddMetrics(const nlohmann::json& metrics, google::protobuf::RepeatedPtrField<proto::Metric>* out) {
  if (!metrics.is_object()) return;
  for (const auto& [key, v] : metrics.items()) {
    if (!v.is_number()) continue;
    auto* m = out->Add();
    m->set_key(key);
    m->set_value(v.get<double>());
  }
}

void WorkerAgent::ResendUnacked() {
  for (const auto& [key, c] : unacked_checkpoints_) {
    proto::Envelope env;
    *env.mutable_checkpoint_committed() = c;
    Send(std::move(env));
  }
  for (const auto& [id, f] : unacked_) {
    proto::Envelope env;
    *env.mutable_attempt_finished() = f;
    Send(std::move(env));
  }
}

void WorkerAgent::FailToStart(const std::string& attempt_id, const std::string& cause) {
  proto::AttemptFinished f;
  f.set_attempt_id(attempt_id);
  f.set_exit_code(-1);
  f.set_cause(cause);
  unacked_[attempt_id] = f;  // reported with the next heartbeat
}

void WorkerAgent::StartAttempt(const proto::Assign& assign) {
  if (children_.count(assign.attempt_id()) || unacked_.count(assign.attempt_id())) return;  // duplicate
  if (draining_) {  // sent before the coordinator heard we are stopping: hand it back unused
    proto::AttemptFinished f;
    f.set_attempt_id(assign.attempt_id());
    f.set_exit_code(kStoppedExitCode);
    f.set_preempted(true);
    f.set_cause("worker shutting down");
    unacked_[assign.attempt_id()] = f;
    return;
  }
  int out[2], prog[2];
  if (::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(prog, O_CLOEXEC) != 0) {
    FailToStart(assign.attempt_id(), "worker could not create pipes");
    return;
  }
  const std::string work = absl::StrCat(config_.work_dir, "/attempts/", SafeName(assign.attempt_id()));
  std::error_code ec;
  std::filesystem::create_directories(work, ec);
  // Job types built into this binary run in it; the LibTorch ones run in dd2-train beside it.
  std::string exe = SelfExe();
  if (FindJobImpl(assign.type()) == nullptr) exe = std::filesystem::path(exe).parent_path().string() + "/dd2-train";
  const std::string job_name = assign.job_id().substr(assign.job_id().find('/') + 1);
  std::vector<std::string> args = {exe, "job-run", "--type", assign.type(), "--params", assign.params_json(),
                                   "--attempt-id", assign.attempt_id(), "--attempt",
                                   std::to_string(assign.attempt()), "--work-dir", work,
                                   "--run-dir", config_.artifacts_root + "/" + assign.run_id(),
                                   "--job-name", job_name, "--progress-fd", "3", "--inputs",
                                   InputsJson(assign), "--device",
                                   config_.device == "cuda" ? "cuda:" + std::to_string(config_.device_index) : "cpu"};
  if (assign.world_size() > 1) {
    for (const std::string& a : {std::string("--rank"), std::to_string(assign.rank()), std::string("--world-size"),
                                 std::to_string(assign.world_size()), std::string("--rendezvous"), assign.rendezvous(),
                                 std::string("--host"), config_.advertise_host}) {
      args.push_back(a);
    }
  }
  pid_t pid = ::fork();
  if (pid == 0) {
    ::setpgid(0, 0);
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);  // a job never outlives its supervising worker
    ::dup2(out[1], 1);
    ::dup2(out[1], 2);
    ::dup2(prog[1], 3);
    if (::chdir(work.c_str()) != 0) _exit(126);
    if (config_.threads > 0) ::setenv("OMP_NUM_THREADS", std::to_string(config_.threads).c_str(), 1);
    ExecOrExit(args);
  }
  ::close(out[1]);
  ::close(prog[1]);
  if (pid < 0) {
    ::close(out[0]);
    ::close(prog[0]);
    FailToStart(assign.attempt_id(), "fork failed");
    return;
  }
  ::setpgid(pid, pid);
  ::fcntl(out[0], F_SETFL, O_NONBLOCK);
  ::fcntl(prog[0], F_SETFL, O_NONBLOCK);
  Child c;
  c.attempt_id = assign.attempt_id();
  c.pid = pid;
  c.out_fd = out[0];
  c.progress_fd = prog[0];
  children_[c.attempt_id] = c;
  std::fprintf(stderr, "dd2-worker: started %s (%s) as pid %d\n", assign.attempt_id().c_str(),
               assign.type().c_str(), pid);
  proto::Envelope env;
  env.mutable_attempt_started()->set_attempt_id(assign.attempt_id());
  env.mutable_attempt_started()->set_child_pid(static_cast<uint32_t>(pid));
  Send(std::move(env));
}

void WorkerAgent::CancelChild(const std::string& attempt_id, int64_t grace_ms, bool fenced) {
  auto it = children_.find(attempt_id);
  if (it == children_.end()) return;
  Child& c = it->second;
  c.cancelled = true;
  c.fenced = c.fenced || fenced;
  ::kill(-c.pid, SIGTERM);
  const int64_t deadline = NowMs() + grace_ms;
  if (c.kill_at_ms == 0 || deadline < c.kill_at_ms) c.kill_at_ms = std::max<int64_t>(deadline, 1);
}

void WorkerAgent::PreemptChildren(bool grace_signal) {
  if (children_.empty()) return;
  std::optional<SlurmEnding> ending;
  if (!config_.slurm.job_id().empty()) {
    // What SLURM is doing to the allocation, asked once for all children.
    std::optional<SlurmJobInfo> info;
    auto jobs = NewShellSlurmCommands(5000)->Query(config_.slurm.job_id());
    if (jobs.ok() && jobs->count(config_.slurm.job_id())) info = jobs->at(config_.slurm.job_id());
    ending = ClassifySlurmEnding(info, config_.slurm.restart_count(), grace_signal, config_.slurm_grace_s);
    std::fprintf(stderr, "dd2-worker: SLURM allocation %s ending: %s\n", config_.slurm.job_id().c_str(),
                 ending->cause.c_str());
  }
  for (auto& [id, c] : children_) {
    if (c.cancelled || c.preempted) continue;
    c.preempted = true;
    if (ending) {
      c.ending_cause = ending->cause;
      c.ending_lost = !ending->preempted;
    }
    ::kill(-c.pid, SIGTERM);
    std::fprintf(stderr, "dd2-worker: preempting %s: checkpoint and stop\n", id.c_str());
  }
}

void WorkerAgent::DrainOutput(Child& c) {
  if (c.out_fd < 0) return;
  char buf[65536];
  while (true) {
    ssize_t n = ::read(c.out_fd, buf, sizeof(buf));
    if (n > 0) {
      if (!c.log) {
        c.log = std::make_shared<std::ofstream>(
            absl::StrCat(config_.work_dir, "/attempts/", SafeName(c.attempt_id), ".log"), std::ios::app | std::ios::binary);
      }
      c.log->write(buf, n);
      proto::Envelope env;
      auto* chunk = env.mutable_log_chunk();
      chunk->set_attempt_id(c.attempt_id);
      chunk->set_offset(c.log_offset);
      chunk->set_data(buf, static_cast<size_t>(n));
      c.log_offset += static_cast<uint64_t>(n);
      if (!c.fenced) Send(std::move(env));
      continue;
    }
    if (n == 0) {
      ::close(c.out_fd);
      c.out_fd = -1;
    }
    return;  // EAGAIN or error
  }
}

void WorkerAgent::DrainProgress(Child& c) {
  if (c.progress_fd < 0) return;
  char buf[8192];
  while (true) {
    ssize_t n = ::read(c.progress_fd, buf, sizeof(buf));
    if (n > 0) {
      c.progress_buf.append(buf, static_cast<size_t>(n));
      continue;
    }
    if (n == 0) {
      ::close(c.progress_fd);
      c.progress_fd = -1;
    }
    break;
  }
  size_t nl;
  nlohmann::json last;  // of the progress lines only the newest matters
  while ((nl = c.progress_buf.find('\n')) != std::string::npos) {
    auto j = nlohmann::json::parse(c.progress_buf.substr(0, nl), nullptr, false);
    c.progress_buf.erase(0, nl + 1);
    if (j.is_discarded() || !j.is_object()) continue;
    if (!j.contains("event")) {
      last = std::move(j);
      continue;
    }
    const std::string kind = FieldOr(j, "event", std::string());
    if (kind == "cause") {
      c.cause = FieldOr(j, "cause", std::string());
      continue;
    }
    if (kind == "outputs") {
      c.outputs_path = FieldOr(j, "path", std::string());
      c.outputs_sha256 = FieldOr(j, "sha256", std::string());
      continue;
    }
    if (c.fenced) continue;
    proto::Envelope env;
    if (kind == "checkpoint") {
      auto* k = env.mutable_checkpoint_committed();
      k->set_attempt_id(c.attempt_id);
      k->set_step(FieldOr(j, "step", uint64_t{0}));
      k->set_path(FieldOr(j, "path", std::string()));
      k->set_sha256(FieldOr(j, "sha256", std::string()));
      k->set_bytes(FieldOr(j, "bytes", uint64_t{0}));
      if (j.contains("metrics")) AddMetrics(j["metrics"], k->mutable_metrics());
      unacked_checkpoints_[{k->attempt_id(), k->step()}] = *k;
    } else if (kind == "resumed") {
      env.mutable_attempt_resumed()->set_attempt_id(c.attempt_id);
      env.mutable_attempt_resumed()->set_step(FieldOr(j, "step", uint64_t{0}));
    } else {
      continue;
    }
    Send(std::move(env));
  }
  if (last.is_null() || c.fenced) return;
  proto::Envelope env;
  auto* p = env.mutable_progress();
  p->set_attempt_id(c.attempt_id);
  p->set_step(FieldOr(last, "step", uint64_t{0}));
  p->set_total(FieldOr(last, "total", uint64_t{0}));
  if (last.contains("metrics")) AddMetrics(last["metrics"], p->mutable_metrics());
  Send(std::move(env));
}

void WorkerAgent::ReapChildren() {
  std::vector<std::string> done;
  for (auto& [id, c] : children_) {
    int status = 0;
    pid_t r = ::waitpid(c.pid, &status, WNOHANG);
    if (r != c.pid) continue;
    // Read what the child wrote before it exited.
    if (c.out_fd >= 0) ::fcntl(c.out_fd, F_SETFL, O_NONBLOCK);
    DrainOutput(c);
    DrainProgress(c);
    if (c.out_fd >= 0) ::close(c.out_fd);
    if (c.progress_fd >= 0) ::close(c.progress_fd);
    ::kill(-c.pid, SIGKILL);  // any grandchildren left in the group
    done.push_back(id);
    if (c.fenced) continue;
    proto::AttemptFinished f;
    f.set_attempt_id(id);
    if (WIFEXITED(status)) {
      f.set_exit_code(WEXITSTATUS(status));
    } else {
      f.set_exit_code(-1);
      f.set_signal(WTERMSIG(status));
    }
    f.set_cancelled(c.cancelled);
    // 143 without a cancel: the gang stopped together because some rank was preempted.
    f.set_preempted(!c.cancelled && (c.preempted || f.exit_code() == kStoppedExitCode));
    f.set_cause(c.cause);
    if (f.preempted() && !c.ending_cause.empty()) {
      f.set_cause(c.ending_cause);
      f.set_preempted(!c.ending_lost);
      f.set_infrastructure(c.ending_lost);
    }
    f.set_outputs_path(c.outputs_path);
    f.set_outputs_sha256(c.outputs_sha256);
    if (f.exit_code() == 127) f.set_cause("job type not implemented on this worker, or exec failed");
    std::fprintf(stderr, "dd2-worker: %s exited (code %d, signal %d)\n", id.c_str(), f.exit_code(), f.signal());
    if (f.exit_code() == 0 && f.signal() == 0) FaultPoint("attempt_end", id);
    unacked_[id] = f;
    proto::Envelope env;
    *env.mutable_attempt_finished() = f;
    Send(std::move(env));
  }
  for (const auto& id : done) children_.erase(id);
}

}  // namespace dd2
