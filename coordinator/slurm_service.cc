// CoordinatorService's SLURM side: allocations recorded by dd2ctl slurm launch, SLURM's job
// states polled into them, and the autoscaler carrying out DecideAutoscale's decisions. Every
// decision and state change is an event; an autoscaler submission is committed as
// "submitting" before sbatch runs, so a coordinator killed in between finds the job by its name
// after the restart instead of submitting it twice.
#include <algorithm>
#include <filesystem>
#include <set>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/protocol.h"
#include "common/status_macros.h"
#include "coordinator/coordinator_service.h"
#include "coordinator/staged.h"

namespace dd2 {
namespace {

constexpr char kSubmitting[] = "submitting";
constexpr char kSbatchFailed[] = "sbatch failed";

bool Unfinished(const SlurmAllocationRecord& a) {
  return a.state != kSbatchFailed && !IsFinalSlurmState(a.state);
}

std::string JobNameOf(const std::string& allocation_id) { return "dd2-" + allocation_id; }

}  // namespace

void CoordinatorService::SetSlurm(std::unique_ptr<SlurmCommands> slurm, std::optional<AutoscaleConfig> autoscale,
                                  SlurmLaunchSpec base) {
  slurm_ = std::move(slurm);
  autoscale_ = std::move(autoscale);
  slurm_base_ = std::move(base);
  slurm_info_.autoscale = autoscale_.has_value();
}

absl::Status CoordinatorService::HandleSlurmRecord(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  const proto::SlurmAllocation& in = env.slurm_record().allocation();
  int64_t job = 0;
  if (!absl::SimpleAtoi(in.slurm_job_id(), &job) || job <= 0) {
    return absl::InvalidArgumentError(absl::StrCat("slurm_record: '", in.slurm_job_id(), "' is not a SLURM job id"));
  }
  if (in.nodes() < 1 || in.workers_per_node() < 1 || in.script().size() > 1 << 20) {
    return absl::InvalidArgumentError("slurm_record: nodes and workers_per_node must be >= 1, script <= 1 MiB");
  }
  for (const auto& [id, a] : state_.allocations) {  // a resent record: the same answer
    if (a.slurm_job_id == in.slurm_job_id()) {
      proto::Envelope reply;
      reply.mutable_slurm_record_reply()->set_id(id);
      Reply(peer, env, reply);
      return absl::OkStatus();
    }
  }
  const int64_t now = clock_->NowMs();
  Staged s(this);
  const std::string id = absl::StrCat("alloc-", next_allocation_seq_);
  SlurmAllocationRecord& a = s.Allocation(id);
  a = SlurmAllocationRecord{id, next_allocation_seq_, "launch", in.slurm_job_id(), in.nodes(), in.workers_per_node(),
                            in.device().substr(0, 16), in.partition().substr(0, 256), in.time_limit().substr(0, 64),
                            in.account().substr(0, 256), in.script(), "PENDING", "", 0, now, now};
  Event(s, "slurm_allocation", "", "", "",
        absl::StrCat(id, ": SLURM job ", a.slurm_job_id, " (", a.nodes, " x ", a.workers_per_node, " ", a.device,
                     " workers) launched by ", env.sender()));
  proto::Envelope reply;
  reply.mutable_slurm_record_reply()->set_id(id);
  reply.set_request_id(env.request_id());
  reply.set_sender("coordinator");
  s.outbox.push_back({peer, reply});
  next_slurm_poll_ms_ = 0;  // read its state at the next tick
  return Commit(s);
}

absl::Status CoordinatorService::HandleSlurmList(const std::string& peer, const proto::Envelope& env) {
  DD2_RETURN_IF_ERROR(CheckVersion(env));
  ReplyJson(peer, env, SlurmDocument(state_, slurm_info_));
  return absl::OkStatus();
}

void CoordinatorService::SlurmTick() {
  const int64_t now = clock_->NowMs();
  if (now < next_slurm_poll_ms_) return;
  const bool any_unfinished = std::any_of(state_.allocations.begin(), state_.allocations.end(),
                                          [](const auto& kv) { return Unfinished(kv.second); });
  if (!slurm_ || (!any_unfinished && !autoscale_)) return;
  next_slurm_poll_ms_ = now + (autoscale_ ? autoscale_->poll_s : 5) * 1000;
  if (any_unfinished) PollSlurm();
  if (autoscale_) Autoscale();
}

void CoordinatorService::PollSlurm() {
  const int64_t now = clock_->NowMs();
  auto jobs = slurm_->Query("");
  slurm_info_.last_poll_ms = now;
  if (!jobs.ok()) {
    slurm_info_.poll_error = std::string(jobs.status().message());
    return;
  }
  slurm_info_.poll_error.clear();
  Staged s(this);
  for (const auto& [id, committed] : state_.allocations) {
    if (!Unfinished(committed)) continue;
    SlurmAllocationRecord a = committed;
    if (a.slurm_job_id.empty()) {  // submitting: did sbatch answer before a restart?
      for (const auto& [job_id, info] : *jobs) {
        if (info.name == JobNameOf(a.id)) a.slurm_job_id = job_id;
      }
      if (a.slurm_job_id.empty()) {
        a.state = kSbatchFailed;
        a.reason = "the coordinator stopped before sbatch answered, and SLURM has no such job";
      } else {
        Event(s, "slurm_adopted", "", "", "", absl::StrCat(a.id, ": SLURM job ", a.slurm_job_id, " found by name"));
      }
    }
    if (!a.slurm_job_id.empty()) {
      auto it = jobs->find(a.slurm_job_id);
      if (it == jobs->end()) {
        auto final_state = slurm_->FinalState(a.slurm_job_id);  // accounting, where it runs
        a.state = final_state.ok() ? *final_state : "ended";
        a.reason = final_state.ok() ? "from sacct" : "SLURM no longer lists it";
      } else {
        a.state = it->second.state;
        a.reason = it->second.reason;
        a.restarts = it->second.restarts;
      }
    }
    // An autoscaler allocation that ended before any worker of it said Hello failed to start
    // (a bad script, a broken node): back off as for a failed sbatch instead of resubmitting.
    if (autoscale_ && a.origin == "autoscale" && !Unfinished(a) && Unfinished(committed) && a.state != "COMPLETED" &&
        !a.slurm_job_id.empty() &&
        std::none_of(state_.workers.begin(), state_.workers.end(),
                     [&](const auto& kv) { return kv.second.slurm_job_id == a.slurm_job_id; })) {
      Event(s, "autoscale_allocation_failed", "", "", "",
            absl::StrCat(a.id, " (job ", a.slurm_job_id, ") ended ", a.state,
                         a.reason.empty() ? "" : " (" + a.reason + ")", " before any worker registered", BackOff()));
    }
    if (a.state != committed.state || a.restarts != committed.restarts || a.slurm_job_id != committed.slurm_job_id) {
      Event(s, "slurm_state", "", "", "",
            absl::StrCat(a.id, " (job ", a.slurm_job_id, "): ", committed.state, " -> ", a.state,
                         a.reason.empty() || a.reason == "None" ? "" : " (" + a.reason + ")",
                         a.restarts != committed.restarts ? absl::StrCat(", restart ", a.restarts) : ""));
      a.updated_ms = now;
      s.Allocation(id) = a;
    } else if (a.reason != committed.reason) {
      a.updated_ms = now;
      s.Allocation(id) = a;
    }
  }
  if (!s.allocations.empty() || !s.events.empty()) Commit(s).IgnoreError();
}

void CoordinatorService::Autoscale() {
  const AutoscaleConfig& cfg = *autoscale_;
  const int64_t now = clock_->NowMs();
  AutoscaleView view;
  view.now_ms = now;
  view.backoff_until_ms = slurm_info_.backoff_until_ms;
  for (const auto& id : state_.ready) {
    const JobRecord& j = state_.jobs.at(id);
    view.ready.push_back({id, j.workers, j.device, j.updated_ms});
  }
  for (const auto& [id, live] : state_.live) {
    const WorkerRecord& w = state_.workers.at(id);
    if (live.peer.empty() || w.state != state::kAlive || w.device != cfg.device) continue;
    if (state_.UsedSlots(id) < w.slots) ++view.free_workers;
  }
  for (const auto& [id, a] : state_.allocations) {
    if (!Unfinished(a)) continue;
    ++view.unfinished_allocations;
    const int64_t asked = a.nodes * a.workers_per_node;
    view.allocation_workers += asked;
    int64_t registered = 0;  // workers of this run of the allocation that said Hello, even if gone since
    for (const auto& [wid, w] : state_.workers) {
      if (!a.slurm_job_id.empty() && w.slurm_job_id == a.slurm_job_id && w.slurm_restart_count == a.restarts) {
        ++registered;
      }
    }
    view.coming_workers += std::max<int64_t>(0, asked - registered);
  }
  AutoscaleDecision d = DecideAutoscale(cfg, view);
  if (!d.held_by.empty() && d.held_by != held_by_) {  // once per hold-up, not per poll of a countdown
    Staged note(this);
    Event(note, "autoscale_waiting", "", "", "", d.why);
    Commit(note).IgnoreError();
  }
  held_by_ = d.held_by;
  slurm_info_.last_decision = d.why;
  if (d.nodes == 0) return;

  // Commit the intent first: a restart between here and sbatch's answer adopts the job by name.
  const std::string id = absl::StrCat("alloc-", next_allocation_seq_);
  SlurmLaunchSpec spec = slurm_base_;
  spec.nodes = static_cast<int>(d.nodes);
  spec.workers_per_node = static_cast<int>(cfg.gpus_per_node);
  spec.device = cfg.device;
  spec.partition = cfg.partition;
  spec.time_limit = cfg.time_limit;
  spec.account = cfg.account;
  spec.sbatch_args = cfg.sbatch_args;
  spec.grace_s = static_cast<int>(cfg.grace_s);
  spec.threads = static_cast<int>(cfg.threads);
  spec.idle_exit_s = static_cast<int>(cfg.idle_timeout_s);
  spec.job_name = JobNameOf(id);
  if (!cfg.worker.empty()) spec.worker_binary = cfg.worker;
  if (!cfg.home.empty()) spec.home = cfg.home;
  Staged intent(this);
  SlurmAllocationRecord& a = intent.Allocation(id);
  a = SlurmAllocationRecord{id, next_allocation_seq_, "autoscale", "", d.nodes, cfg.gpus_per_node, cfg.device,
                            cfg.partition, cfg.time_limit, cfg.account, "", kSubmitting, "", 0, now, now};
  absl::Status valid = ValidateLaunchSpec(spec);
  if (valid.ok()) a.script = RenderSbatchScript(spec);
  Event(intent, "autoscale_submit", "", "", "", absl::StrCat(id, ": ", d.nodes, " x ", cfg.gpus_per_node, " ",
                                                             cfg.device, " workers; ", d.why));
  if (!Commit(intent).ok()) return;

  Staged done(this);
  SlurmAllocationRecord& r = done.Allocation(id);
  std::error_code ec;
  std::filesystem::create_directories(spec.home + "/slurm", ec);  // the script's --output folder
  absl::StatusOr<std::string> job = valid.ok() ? slurm_->Submit(r.script) : absl::StatusOr<std::string>(valid);
  r.updated_ms = clock_->NowMs();
  if (job.ok()) {
    r.slurm_job_id = *job;
    r.state = "PENDING";
    slurm_info_.sbatch_failures = 0;
    slurm_info_.backoff_until_ms = 0;
    Event(done, "slurm_allocation", "", "", "", absl::StrCat(id, ": SLURM job ", *job, " submitted by the autoscaler"));
  } else {
    r.state = kSbatchFailed;
    r.reason = std::string(job.status().message()).substr(0, 1024);
    Event(done, "autoscale_sbatch_failed", "", "", "", absl::StrCat(id, ": ", r.reason, BackOff()));
  }
  Commit(done).IgnoreError();
}

std::string CoordinatorService::BackOff() {
  ++slurm_info_.sbatch_failures;
  const int64_t backoff = SbatchBackoffMs(*autoscale_, slurm_info_.sbatch_failures);
  slurm_info_.backoff_until_ms = clock_->NowMs() + backoff;
  return absl::StrCat("; next try in ", backoff / 1000, " s");
}

}  // namespace dd2
