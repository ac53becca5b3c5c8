// CoordinatorService driven directly with a FakeClock and the in-memory store: every timeout is
// reached with FakeClock::Advance, never by sleeping.
#include "coordinator/coordinator_service.h"

#include <sqlite3.h>

#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include <deque>
#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "common/checkpoint_manifest.h"
#include "common/protocol.h"
#include "common/run_spec.h"
#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

class CoordinatorServiceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    config_.home = dir_.path();
    config_.heartbeat_interval_ms = 1000;
    config_.heartbeat_liveness = 3;
    config_.lost_after_ms = 10000;
    config_.retry_backoff_ms = 1000;
    store_ = NewInMemoryJobStore();
    Restart();
  }

  // A new service on the same store and clock: a coordinator restart.
  void Restart() {
    sent_.clear();
    svc_ = std::make_unique<CoordinatorService>(
        config_, store_.get(), &clock_,
        [this](const std::string& peer, const proto::Envelope& env) { sent_.push_back({peer, env}); });
    ASSERT_TRUE(svc_->Recover().ok());
  }

  void Frame(const std::string& peer, proto::Envelope env) {
    if (env.sender().empty()) env.set_sender(peer);
    svc_->HandleFrame(peer, EncodeEnvelope(env));
    svc_->Schedule();
  }

  // Messages sent to `peer` since the last call, oldest first.
  std::vector<proto::Envelope> Take(const std::string& peer) {
    std::vector<proto::Envelope> out;
    std::vector<std::pair<std::string, proto::Envelope>> rest;
    for (auto& [p, e] : sent_) (p == peer ? out.push_back(e) : rest.push_back({p, e}));
    sent_ = rest;
    return out;
  }

  std::vector<proto::Assign> Assigns(const std::string& peer) {
    std::vector<proto::Assign> out;
    for (auto& e : Take(peer)) if (e.has_assign()) out.push_back(e.assign());
    return out;
  }

  void Hello(const std::string& worker, std::vector<std::string> held = {}) {
    proto::Envelope env;
    auto* h = env.mutable_hello();
    h->set_worker_id(worker);
    h->set_host("test");
    h->set_device("cpu");
    h->set_slots(1);
    for (auto& a : held) h->add_attempts()->set_attempt_id(a);
    Frame(worker, env);
  }

  std::string Submit(const std::string& yaml, const std::string& submission = "sub-1") {
    auto spec = ParseRunSpec(yaml, "test.yaml");
    EXPECT_TRUE(spec.ok()) << spec.status();
    proto::Envelope env;
    *env.mutable_submit()->mutable_spec() = *spec;
    env.mutable_submit()->set_submission_id(submission);
    Frame("client", env);
    for (auto& e : Take("client")) {
      if (e.has_submit_reply()) return e.submit_reply().run_id();
    }
    return "";
  }

  void Started(const std::string& worker, const std::string& attempt) {
    proto::Envelope env;
    env.mutable_attempt_started()->set_attempt_id(attempt);
    Frame(worker, env);
  }

  void Finished(const std::string& worker, const std::string& attempt, int code, bool cancelled = false) {
    proto::Envelope env;
    env.mutable_attempt_finished()->set_attempt_id(attempt);
    env.mutable_attempt_finished()->set_exit_code(code);
    env.mutable_attempt_finished()->set_cancelled(cancelled);
    Frame(worker, env);
  }

  // The attempt stopped without failing: preempted (no retry) or, with `infrastructure`, ended
  // by its surroundings (lost budget); exit 143 with `cause`.
  void Stopped(const std::string& worker, const std::string& attempt, bool preempted, const std::string& cause = "",
               bool infrastructure = false) {
    proto::Envelope env;
    auto* f = env.mutable_attempt_finished();
    f->set_attempt_id(attempt);
    f->set_exit_code(143);
    f->set_preempted(preempted);
    f->set_cause(cause);
    f->set_infrastructure(infrastructure);
    Frame(worker, env);
  }

  void Heartbeat(const std::string& worker, std::vector<std::string> running = {}) {
    proto::Envelope env;
    env.mutable_heartbeat()->set_worker_id(worker);
    for (auto& a : running) env.mutable_heartbeat()->add_running_attempts(a);
    Frame(worker, env);
  }

  Json Status(const std::string& run) {
    proto::Envelope env;
    env.mutable_status()->set_run_id(run);
    Frame("client", env);
    auto replies = Take("client");
    EXPECT_FALSE(replies.empty());
    return Json::parse(replies.back().json_reply().json());
  }

  Json Jobs(const std::string& run) {
    proto::Envelope env;
    env.mutable_jobs()->set_run_id(run);
    Frame("client", env);
    return Json::parse(Take("client").back().json_reply().json());
  }

  size_t CountEvents(const std::string& kind) { return store_->Events({"", "", kind})->size(); }

  // Writes a real checkpoint file and manifest for `step` in the attempt's job folder
  // (<home>/artifacts/<run>/<job>/checkpoints) and reports it from `worker`.
  std::string Checkpoint(const std::string& worker, const std::string& attempt, int64_t step,
                         std::map<std::string, double> metrics = {}) {
    const std::string folder = dir_.path() + "/artifacts/" + attempt.substr(0, attempt.find('#')) + "/checkpoints";
    std::filesystem::create_directories(folder);
    return ReportCheckpoint(worker, attempt, step, CheckpointPath(folder, step), metrics);
  }

  // Writes a checkpoint at `path` (its folder must exist) and reports it.
  std::string ReportCheckpoint(const std::string& worker, const std::string& attempt, int64_t step,
                               const std::string& path, std::map<std::string, double> metrics = {}) {
    std::ofstream(path) << "weights of step " << step;
    auto manifest = CommitCheckpoint(path, step, attempt);
    EXPECT_TRUE(manifest.ok()) << manifest.status();
    proto::Envelope env;
    auto* c = env.mutable_checkpoint_committed();
    c->set_attempt_id(attempt);
    c->set_step(static_cast<uint64_t>(step));
    c->set_path(path);
    c->set_sha256(manifest.ok() ? manifest->sha256 : std::string(64, '0'));
    c->set_bytes(manifest.ok() ? static_cast<uint64_t>(manifest->bytes) : 0);
    for (const auto& [k, v] : metrics) {
      auto* m = c->add_metrics();
      m->set_key(k);
      m->set_value(v);
    }
    Frame(worker, env);
    return path;
  }

  // Checkpoint steps of `run` in `state`, from `dd2ctl ckpt ls`'s request.
  std::vector<int64_t> CheckpointSteps(const std::string& run, const std::string& state) {
    proto::Envelope env;
    env.mutable_checkpoints()->set_run_id(run);
    Frame("client", env);
    std::vector<int64_t> out;
    const Json reply = Json::parse(Take("client").back().json_reply().json());
    for (const auto& c : reply["checkpoints"]) {
      if (c["state"] == state) out.push_back(c["step"].get<int64_t>());
    }
    return out;
  }

  testing::TempDir dir_;
  CoordinatorConfig config_;
  FakeClock clock_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<CoordinatorService> svc_;
  std::vector<std::pair<std::string, proto::Envelope>> sent_;
};

constexpr char kChain[] = R"(
name: chain
jobs:
  - {name: a, type: sleep}
  - {name: b, type: sleep, after: [a]}
)";

TEST_F(CoordinatorServiceTest, RunsADagToSuccess) {
  Hello("w1");
  ASSERT_TRUE(Take("w1")[0].has_welcome());
  const std::string run = Submit(kChain);
  ASSERT_EQ(run, "chain-1");
  auto assigns = Assigns("w1");
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(assigns[0].attempt_id(), "chain-1/a#1");
  Started("w1", "chain-1/a#1");
  proto::Envelope progress;
  progress.mutable_progress()->set_attempt_id("chain-1/a#1");
  progress.mutable_progress()->set_step(3);
  progress.mutable_progress()->set_total(10);
  auto* m = progress.mutable_progress()->add_metrics();
  m->set_key("loss");
  m->set_value(0.25);
  Frame("w1", progress);
  Json st = Status(run);
  EXPECT_EQ(st["run"]["jobs"][0]["state"], "running");
  EXPECT_EQ(st["run"]["jobs"][0]["step"], 3);
  EXPECT_EQ(st["run"]["jobs"][0]["metrics"]["loss"], 0.25);
  EXPECT_EQ(st["run"]["jobs"][1]["state"], "pending");
  Finished("w1", "chain-1/a#1", 0);
  auto msgs = Take("w1");
  ASSERT_EQ(msgs.size(), 2u);  // ack, then b's assignment
  EXPECT_TRUE(msgs[0].has_finished_ack());
  EXPECT_EQ(msgs[1].assign().attempt_id(), "chain-1/b#1");
  Finished("w1", "chain-1/b#1", 0);
  EXPECT_EQ(Status(run)["run"]["state"], "succeeded");
  EXPECT_EQ(CountEvents("job_succeeded"), 2u);
  EXPECT_EQ(store_->Metrics("chain-1/a")->size(), 1u);
}

// A snapshot for the HTTP thread shows what the loop shows, whether it is a fresh copy or an
// older snapshot brought up to date; one still held by a reader is never changed.
TEST_F(CoordinatorServiceTest, SnapshotsShowTheLoopsStateAndAHeldOneNeverChanges) {
  Hello("w1");
  const std::string run = Submit(kChain);
  // The loop's documents, less the coordinator's counters (each request counts a frame).
  auto loop_docs = [&] {
    Json st = Status(run);
    Json all = Status("");
    all.erase("coordinator");
    return Json{st["run"], all, Jobs(run)};
  };
  auto snapshot_docs = [&](const CoordinatorSnapshot& s) {
    Json all = *StatusDocument(s.state, "", s.info);
    all.erase("coordinator");
    return Json{(*StatusDocument(s.state, run, s.info))["run"], all, *JobsDocument(s.state, run)};
  };
  auto first = svc_->MakeSnapshot();
  const CoordinatorSnapshot* first_address = first.get();
  EXPECT_EQ(snapshot_docs(*first), loop_docs());
  first.reset();  // nobody reads it any more

  Started("w1", "chain-1/a#1");
  auto second = svc_->MakeSnapshot();  // fresh: only one older snapshot, and it is the latest but one
  EXPECT_EQ(snapshot_docs(*second), loop_docs());
  const Json second_docs = snapshot_docs(*second);

  Finished("w1", "chain-1/a#1", 0);
  Hello("w2");
  auto third = svc_->MakeSnapshot();
  EXPECT_EQ(third.get(), first_address);  // the first, recycled
  EXPECT_EQ(snapshot_docs(*third), loop_docs());
  EXPECT_EQ(third->state.jobs.at("chain-1/b").state, "assigned");

  Finished("w1", "chain-1/b#1", 0);
  auto fourth = svc_->MakeSnapshot();  // `second` is still held: a fresh copy
  EXPECT_NE(fourth.get(), second.get());
  EXPECT_EQ(snapshot_docs(*fourth), loop_docs());
  EXPECT_EQ(snapshot_docs(*second), second_docs);
  EXPECT_EQ(fourth->state.runs.at(run).state, "succeeded");
}

// The ready queue is kept in placement order as jobs become ready and leave, and rebuilt from
// the store at a restart: run priority first, then submission order, then spec order. (Distinct
// params, so no job waits to reuse another's outputs.)
TEST_F(CoordinatorServiceTest, ReadyJobsArePlacedInPriorityOrderAcrossRunsAndARestart) {
  auto run = [](const std::string& name, const std::string& priority, std::vector<int> steps) {
    std::string yaml = absl::StrCat("name: ", name, "\n", priority, "jobs:\n");
    for (size_t i = 0; i < steps.size(); ++i) {
      absl::StrAppend(&yaml, "  - {name: ", std::string(1, static_cast<char>('a' + i)), ", type: sleep, params: {steps: ",
                      steps[i], "}}\n");
    }
    return yaml;
  };
  ASSERT_EQ(Submit(run("low", "", {1, 2}), "sub-low"), "low-1");
  ASSERT_EQ(Submit(run("high", "priority: 5\n", {3}), "sub-high"), "high-2");
  ASSERT_EQ(Submit(run("later", "", {4}), "sub-later"), "later-3");
  Hello("w1");
  std::vector<std::string> order;
  auto start_next = [&] {  // the one assignment sent since, started
    auto assigns = Assigns("w1");
    ASSERT_EQ(assigns.size(), 1u);
    order.push_back(assigns[0].attempt_id());
    Started("w1", order.back());
  };
  start_next();
  Finished("w1", order.back(), 0);
  start_next();
  Restart();  // the rest of the queue comes back from the store
  Hello("w1", {order.back()});
  Finished("w1", order.back(), 0);
  start_next();
  Finished("w1", order.back(), 0);
  start_next();
  Finished("w1", order.back(), 0);
  EXPECT_EQ(order, (std::vector<std::string>{"high-2/a#1", "low-1/a#1", "low-1/b#1", "later-3/a#1"}));
  EXPECT_TRUE(Assigns("w1").empty());
}

TEST_F(CoordinatorServiceTest, SubmitIsIdempotentBySubmissionId) {
  EXPECT_EQ(Submit(kChain, "same"), "chain-1");
  EXPECT_EQ(Submit(kChain, "same"), "chain-1");
  EXPECT_EQ(Submit(kChain, "other"), "chain-2");
  EXPECT_EQ(store_->Load()->runs.size(), 2u);
}

TEST_F(CoordinatorServiceTest, FinishedReportedTwiceChangesNothingTheSecondTime) {
  Hello("w1");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  Take("w1");
  Finished("w1", "one-1/a#1", 0);
  auto before = *store_->Load();
  auto events_before = store_->Events({})->size();
  Finished("w1", "one-1/a#1", 0);
  auto after = *store_->Load();
  EXPECT_EQ(after.jobs, before.jobs);
  EXPECT_EQ(after.attempts, before.attempts);
  EXPECT_EQ(after.runs, before.runs);
  EXPECT_EQ(store_->Events({})->size(), events_before);
  auto msgs = Take("w1");
  ASSERT_EQ(msgs.size(), 2u);
  EXPECT_TRUE(msgs[1].has_finished_ack());  // still acknowledged, so the worker forgets it
}

TEST_F(CoordinatorServiceTest, SilentWorkerIsSuspectThenLostAndItsJobMovesOn) {
  Hello("w1");
  Hello("w2");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  auto a1 = Assigns("w1");
  auto a2 = Assigns("w2");
  const std::string worker = a1.empty() ? "w2" : "w1";
  const std::string other = a1.empty() ? "w1" : "w2";
  Started(worker, "one-1/a#1");
  // Both heartbeat for a while; then `worker` goes silent.
  clock_.Advance(3001);
  Heartbeat(other);
  svc_->Tick();
  Json workers;
  {
    proto::Envelope env;
    env.mutable_workers();
    Frame("client", env);
    workers = Json::parse(Take("client").back().json_reply().json());
  }
  for (auto& w : workers["workers"]) {
    EXPECT_EQ(w["state"], w["id"] == worker ? "suspect" : "alive");
  }
  EXPECT_EQ(Status("one-1")["run"]["jobs"][0]["state"], "running");  // suspect is not dead
  for (int i = 0; i < 7; ++i) {
    clock_.Advance(1000);
    Heartbeat(other);
    svc_->Tick();
  }
  Json jobs = Jobs("one-1");
  EXPECT_EQ(jobs["jobs"][0]["attempts_detail"][0]["state"], "lost");
  EXPECT_EQ(jobs["jobs"][0]["attempts_detail"][0]["cause"], "worker lost");
  EXPECT_EQ(jobs["jobs"][0]["state"], "retrying");
  clock_.Advance(1000);
  Heartbeat(other);
  svc_->Tick();
  auto assigns = Assigns(other);
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(assigns[0].attempt_id(), "one-1/a#2");
  Finished(other, "one-1/a#2", 0);
  EXPECT_EQ(Status("one-1")["run"]["state"], "succeeded");
  EXPECT_EQ(CountEvents("worker_lost"), 1u);
}

TEST_F(CoordinatorServiceTest, SuspectWorkerThatComesBackKeepsItsJob) {
  Hello("w1");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  Started("w1", "one-1/a#1");
  clock_.Advance(5000);
  svc_->Tick();
  Heartbeat("w1", {"one-1/a#1"});
  svc_->Tick();
  EXPECT_EQ(CountEvents("worker_suspect"), 1u);
  EXPECT_EQ(CountEvents("worker_recovered"), 1u);
  EXPECT_EQ(Jobs("one-1")["jobs"][0]["attempts"], 1);
  Finished("w1", "one-1/a#1", 0);
  EXPECT_EQ(Status("one-1")["run"]["state"], "succeeded");
}

TEST_F(CoordinatorServiceTest, FailuresRetryWithExponentialBackoffThenFailTheRun) {
  Hello("w1");
  Submit(R"(
name: flaky
jobs:
  - {name: a, type: sleep, retries: 2}
  - {name: b, type: sleep, after: [a]}
)");
  Take("w1");
  Finished("w1", "flaky-1/a#1", 3);
  EXPECT_EQ(Status("flaky-1")["run"]["jobs"][0]["state"], "retrying");
  clock_.Advance(999);
  svc_->Tick();
  EXPECT_TRUE(Assigns("w1").empty());
  clock_.Advance(1);
  svc_->Tick();
  ASSERT_EQ(Assigns("w1").size(), 1u);
  Finished("w1", "flaky-1/a#2", 3);
  clock_.Advance(1999);
  svc_->Tick();
  EXPECT_TRUE(Assigns("w1").empty());  // second backoff doubles
  clock_.Advance(1);
  svc_->Tick();
  ASSERT_EQ(Assigns("w1").size(), 1u);
  Finished("w1", "flaky-1/a#3", 3);
  Json st = Status("flaky-1");
  EXPECT_EQ(st["run"]["state"], "failed");
  EXPECT_EQ(st["run"]["jobs"][0]["state"], "failed");
  EXPECT_EQ(st["run"]["jobs"][0]["failure"], "exit code 3");
  EXPECT_EQ(st["run"]["jobs"][1]["state"], "cancelled");
}

TEST_F(CoordinatorServiceTest, CancelStopsRunningAttemptsAndPendingJobs) {
  Hello("w1");
  Submit(kChain);
  Take("w1");
  Started("w1", "chain-1/a#1");
  proto::Envelope cancel;
  cancel.mutable_cancel()->set_target("chain-1");
  Frame("client", cancel);
  EXPECT_EQ(Take("client").back().cancel_reply().cancelled(), 2u);
  auto msgs = Take("w1");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].cancel_attempt().attempt_id(), "chain-1/a#1");
  EXPECT_EQ(Status("chain-1")["run"]["state"], "running");  // until the attempt stops
  Finished("w1", "chain-1/a#1", 143, /*cancelled=*/true);
  EXPECT_EQ(Status("chain-1")["run"]["state"], "cancelled");
  // Idempotent: nothing left to cancel.
  Frame("client", cancel);
  EXPECT_EQ(Take("client").back().cancel_reply().cancelled(), 0u);
  proto::Envelope missing;
  missing.mutable_cancel()->set_target("nope");
  Frame("client", missing);
  EXPECT_EQ(Take("client").back().error().code(), static_cast<int>(absl::StatusCode::kNotFound));
}

TEST_F(CoordinatorServiceTest, RestartReattachesRunningAttemptsInsteadOfKillingThem) {
  Hello("w1");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  Started("w1", "one-1/a#1");
  Restart();
  Heartbeat("w1", {"one-1/a#1"});
  EXPECT_TRUE(Take("w1").back().has_re_register());
  Hello("w1", {"one-1/a#1"});
  auto msgs = Take("w1");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].welcome().stop_attempts_size(), 0);
  EXPECT_EQ(CountEvents("attempt_reattached"), 1u);
  Finished("w1", "one-1/a#1", 0);
  EXPECT_EQ(Status("one-1")["run"]["state"], "succeeded");
  EXPECT_EQ(Jobs("one-1")["jobs"][0]["attempts"], 1);
  EXPECT_EQ(CountEvents("job_succeeded"), 1u);
}

TEST_F(CoordinatorServiceTest, AfterRestartAnUnreturnedWorkerIsLostAndItsJobRetried) {
  Hello("w1");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  Started("w1", "one-1/a#1");
  Restart();
  Hello("w2");
  clock_.Advance(10001);
  Heartbeat("w2");
  svc_->Tick();
  clock_.Advance(1000);
  svc_->Tick();
  auto assigns = Assigns("w2");
  ASSERT_EQ(assigns.size(), 1u);
  EXPECT_EQ(assigns[0].attempt_id(), "one-1/a#2");
}

TEST_F(CoordinatorServiceTest, ReplacedAttemptIsFencedWhenItsWorkerReturns) {
  Hello("w1");
  Hello("w2");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  const std::string first = Assigns("w1").empty() ? "w2" : "w1";
  const std::string second = first == "w1" ? "w2" : "w1";
  Take(second);
  for (int i = 0; i < 12; ++i) {
    clock_.Advance(1000);
    Heartbeat(second);
    svc_->Tick();
  }
  ASSERT_EQ(Assigns(second).size(), 1u);  // a#2
  Hello(first, {"one-1/a#1"});
  auto welcome = Take(first)[0].welcome();
  ASSERT_EQ(welcome.stop_attempts_size(), 1);
  EXPECT_EQ(welcome.stop_attempts(0), "one-1/a#1");
  Finished(first, "one-1/a#1", 0);  // too late: acknowledged and ignored
  EXPECT_EQ(CountEvents("job_succeeded"), 0u);
  Finished(second, "one-1/a#2", 0);
  EXPECT_EQ(CountEvents("job_succeeded"), 1u);
}

TEST_F(CoordinatorServiceTest, WorkerThatRestartedWithoutItsAttemptLosesIt) {
  Hello("w1");
  Submit("name: one\njobs: [{name: a, type: sleep}]\n");
  Take("w1");
  Hello("w1");  // a new process with the same id holds nothing
  EXPECT_EQ(Jobs("one-1")["jobs"][0]["attempts_detail"][0]["cause"], "worker lost");
  clock_.Advance(1000);
  svc_->Tick();
  ASSERT_EQ(Assigns("w1").size(), 1u);
}

TEST_F(CoordinatorServiceTest, WrongProtocolVersionIsRefusedAtHello) {
  proto::Envelope env;
  env.set_version(99);
  env.mutable_hello()->set_worker_id("old");
  env.mutable_hello()->set_device("cpu");
  env.mutable_hello()->set_slots(1);
  Frame("old", env);
  auto msgs = Take("old");
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_THAT(msgs[0].error().message(), ::testing::HasSubstr("version 99"));
  EXPECT_TRUE(store_->Load()->workers.empty());
}

TEST_F(CoordinatorServiceTest, MalformedFramesAreCountedAndDropped) {
  svc_->HandleFrame("x", "");
  svc_->HandleFrame("x", "not a protobuf \xff\xff");
  proto::Envelope wrong_direction;
  wrong_direction.mutable_welcome();
  Frame("x", wrong_direction);
  EXPECT_EQ(svc_->malformed_frames(), 3);
  EXPECT_EQ(svc_->frames(), 3);
}

constexpr char kRetained[] = R"(
name: keep
jobs:
  - name: d
    type: distill
    retention: {keep_latest: 2, keep_best: 1, metric: loss, mode: min}
)";

// Storage faults: a transition whose SQLite transaction fails (another process holds the write
// lock; the disk is full) is applied not at all, neither to the file nor to memory, the sender
// gets an error naming what could not be stored, and the worker's resend after the fault
// records it exactly once.
class StorageFaultTest : public CoordinatorServiceTest {
 protected:
  void UseSqlite(const std::string& path) {
    auto sqlite = OpenSqliteJobStore(path, /*busy_timeout_ms=*/50);
    ASSERT_TRUE(sqlite.ok()) << sqlite.status();
    store_ = std::move(sqlite).value();
    Restart();
  }

  // A job started on w1; its end is then reported while the store fails, and again after.
  void StartJob() {
    Hello("w1");
    Submit("name: s\njobs:\n  - {name: a, type: sleep}\n");
    ASSERT_EQ(Assigns("w1").size(), 1u);
    Started("w1", "s-1/a#1");
    Take("w1");
  }

  // The end reported while the store fails: no ack, an error naming it, nothing applied.
  void ExpectFinishRefused(const std::string& cause) {
    Finished("w1", "s-1/a#1", 0);
    const auto replies = Take("w1");
    ASSERT_EQ(replies.size(), 1u);
    EXPECT_FALSE(replies[0].has_finished_ack()) << "unacknowledged: the worker resends it";
    ASSERT_TRUE(replies[0].has_error());
    EXPECT_THAT(replies[0].error().message(), ::testing::HasSubstr("could not store"));
    EXPECT_THAT(replies[0].error().message(), ::testing::HasSubstr("job_succeeded"));
    EXPECT_THAT(replies[0].error().message(), ::testing::HasSubstr(cause));
    EXPECT_EQ(svc_->store_errors(), 1);
    EXPECT_EQ(Status("s-1")["run"]["jobs"][0]["state"], "running") << "memory unchanged";
    EXPECT_EQ(Status("")["coordinator"]["store_errors"], 1);
  }

  // The resend once the fault is gone: recorded once, in memory and in the file.
  void ExpectFinishRecorded() {
    Finished("w1", "s-1/a#1", 0);
    const auto replies = Take("w1");  // the ack, and maybe the next job's Assign
    ASSERT_FALSE(replies.empty());
    EXPECT_TRUE(replies[0].has_finished_ack());
    EXPECT_EQ(Status("s-1")["run"]["state"], "succeeded");
    Restart();
    EXPECT_EQ(Status("s-1")["run"]["state"], "succeeded");
    EXPECT_EQ(CountEvents("job_succeeded"), 1u);
  }
};

TEST_F(StorageFaultTest, LockedDatabaseFailsTheWholeTransitionAndTheResendRecordsItOnce) {
  const std::string path = dir_.path() + "/state.db";
  UseSqlite(path);
  StartJob();
  sqlite3* other = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &other), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(other, "BEGIN EXCLUSIVE", nullptr, nullptr, nullptr), SQLITE_OK);
  ExpectFinishRefused("database busy");
  EXPECT_EQ(CountEvents("job_succeeded"), 0u) << "nothing in the file";
  // A submission meanwhile is refused whole too, and takes no run id.
  proto::Envelope submit;
  *submit.mutable_submit()->mutable_spec() = *ParseRunSpec("name: t\njobs:\n  - {name: b, type: sleep}\n", "t.yaml");
  submit.mutable_submit()->set_submission_id("sub-locked");
  Frame("client", submit);
  auto replies = Take("client");
  ASSERT_EQ(replies.size(), 1u);
  ASSERT_TRUE(replies[0].has_error());
  EXPECT_THAT(replies[0].error().message(), ::testing::HasSubstr("run_submitted"));
  ASSERT_EQ(sqlite3_exec(other, "ROLLBACK", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(other);
  EXPECT_EQ(Submit("name: t\njobs:\n  - {name: b, type: sleep}\n", "sub-locked"), "t-2");
  ExpectFinishRecorded();
}

TEST_F(StorageFaultTest, FullDiskFailsTheWholeTransitionAndTheResendRecordsItOnce) {
  testing::SmallDisk disk(1 << 20);
  if (!disk.ok()) GTEST_SKIP() << disk.why();
  UseSqlite(disk.path() + "/state.db");
  StartJob();
  const std::string filler = disk.Fill();
  ExpectFinishRefused("disk full");
  std::filesystem::remove(filler);
  ExpectFinishRecorded();
}

TEST_F(CoordinatorServiceTest, RetentionKeepsWhatThePolicySaysAcrossARestart) {
  auto sqlite = OpenSqliteJobStore(dir_.path() + "/state.db");
  ASSERT_TRUE(sqlite.ok());
  store_ = std::move(sqlite).value();
  Restart();
  Hello("w1");
  const std::string run = Submit(kRetained);
  ASSERT_EQ(Assigns("w1").size(), 1u);
  const std::string a = "keep-1/d#1";
  Started("w1", a);
  std::map<int64_t, std::string> paths;
  for (auto [step, loss] : std::vector<std::pair<int64_t, double>>{{100, 0.5}, {200, 0.1}, {300, 0.4}, {400, 0.3}}) {
    paths[step] = Checkpoint("w1", a, step, {{"loss", loss}});
  }
  // Newest two (300, 400) and the best by loss (200).
  EXPECT_THAT(CheckpointSteps(run, "committed"), ::testing::ElementsAre(200, 300, 400));
  EXPECT_THAT(CheckpointSteps(run, "deleted"), ::testing::ElementsAre(100));
  EXPECT_FALSE(std::filesystem::exists(paths[100]));
  EXPECT_FALSE(std::filesystem::exists(ManifestPathFor(paths[100])));
  EXPECT_TRUE(std::filesystem::exists(paths[200]));

  Restart();  // the coordinator restarts; the policy still holds
  Hello("w1", {a});
  paths[500] = Checkpoint("w1", a, 500, {{"loss", 0.6}});
  EXPECT_THAT(CheckpointSteps(run, "committed"), ::testing::ElementsAre(200, 400, 500));
  EXPECT_THAT(CheckpointSteps(run, "deleted"), ::testing::ElementsAre(100, 300));
  EXPECT_FALSE(std::filesystem::exists(paths[300]));
  for (int64_t step : {200, 400, 500}) EXPECT_TRUE(std::filesystem::exists(paths[step])) << step;
  // Each deletion was journaled before it happened.
  auto events = *store_->Events({run, "", ""});
  std::vector<std::string> order;
  for (const auto& e : events) {
    if (e.kind == "checkpoint_deleting" || e.kind == "checkpoint_deleted") order.push_back(e.kind + " " + e.detail.substr(0, 8));
  }
  EXPECT_THAT(order, ::testing::ElementsAre(::testing::StartsWith("checkpoint_deleting step 100"),
                                            ::testing::StartsWith("checkpoint_deleted step 100"),
                                            ::testing::StartsWith("checkpoint_deleting step 300"),
                                            ::testing::StartsWith("checkpoint_deleted step 300")));
}

TEST_F(CoordinatorServiceTest, DeletionJournaledBeforeACrashIsFinishedAtStart) {
  Hello("w1");
  const std::string run = Submit(kRetained);
  const std::string a = "keep-1/d#1";
  Started("w1", a);
  const std::string path = Checkpoint("w1", a, 100, {{"loss", 1}});
  // The coordinator journaled the deletion, then died before removing the file.
  auto snap = store_->Load();
  StoreTx tx;
  tx.checkpoints = snap->checkpoints;
  tx.checkpoints[0].state = "deleting";
  ASSERT_TRUE(store_->Apply(tx).ok());
  Restart();
  EXPECT_FALSE(std::filesystem::exists(path));
  EXPECT_THAT(CheckpointSteps(run, "deleted"), ::testing::ElementsAre(100));
}

TEST_F(CoordinatorServiceTest, CheckpointOutsideItsJobFolderIsRefusedAndNeverDeleted) {
  namespace fs = std::filesystem;
  Hello("w1");
  const std::string run = Submit(kRetained);
  const std::string a = "keep-1/d#1";
  Started("w1", a);
  Take("w1");
  const std::string job_dir = dir_.path() + "/artifacts/keep-1/d", elsewhere = dir_.path() + "/elsewhere";
  fs::create_directories(job_dir + "/checkpoints");
  fs::create_directories(elsewhere);
  fs::create_directories(dir_.path() + "/artifacts/keep-1/other");
  fs::create_directory_symlink(elsewhere, job_dir + "/link");                 // a folder pointing out
  std::ofstream(elsewhere + "/target.pt") << "not a checkpoint";
  fs::create_symlink(elsewhere + "/target.pt", job_dir + "/checkpoints/ckpt-file-link.pt");  // a file pointing out
  const std::vector<std::string> outside = {
      elsewhere + "/absolute.pt",                                   // an absolute path elsewhere
      job_dir + "/checkpoints/../../../../elsewhere/dotdot.pt",     // '..' back out
      job_dir + "/link/through-symlink.pt",                         // through the folder symlink
      dir_.path() + "/artifacts/keep-1/other/another-job.pt",       // another job's folder
      "relative/path.pt",
  };
  int64_t step = 100;
  for (const auto& path : outside) {
    if (path[0] == '/') {
      ReportCheckpoint("w1", a, step, path, {{"loss", 0.01}});  // the best loss: retention would keep it
    } else {
      proto::Envelope env;
      auto* c = env.mutable_checkpoint_committed();
      c->set_attempt_id(a);
      c->set_step(static_cast<uint64_t>(step));
      c->set_path(path);
      c->set_sha256(std::string(64, 'a'));
      Frame("w1", env);
    }
    auto acks = Take("w1");  // acknowledged, so the worker stops resending
    ASSERT_EQ(acks.size(), 1u) << path;
    EXPECT_EQ(acks[0].checkpoint_ack().step(), static_cast<uint64_t>(step));
    step += 100;
  }
  {  // the file symlink: written by hand, since committing would hash the target
    proto::Envelope env;
    auto* c = env.mutable_checkpoint_committed();
    c->set_attempt_id(a);
    c->set_step(static_cast<uint64_t>(step));
    c->set_path(job_dir + "/checkpoints/ckpt-file-link.pt");
    c->set_sha256(std::string(64, 'b'));
    Frame("w1", env);
    step += 100;
  }
  EXPECT_EQ(CountEvents("checkpoint_refused"), 6u);
  EXPECT_EQ(svc_->refused_paths(), 6);
  EXPECT_TRUE(CheckpointSteps(run, "committed").empty());
  // Real checkpoints after them: a retention pass runs with each and deletes only its own files.
  std::vector<std::string> inside;
  for (int i = 0; i < 4; ++i) inside.push_back(Checkpoint("w1", a, step + 100 * i, {{"loss", 1.0 - 0.1 * i}}));
  EXPECT_EQ(CheckpointSteps(run, "committed").size(), 2u);
  EXPECT_EQ(CheckpointSteps(run, "deleted").size(), 2u);
  EXPECT_FALSE(fs::exists(inside[0]));
  for (const auto& path : {elsewhere + "/absolute.pt", elsewhere + "/dotdot.pt", elsewhere + "/through-symlink.pt",
                           dir_.path() + "/artifacts/keep-1/other/another-job.pt", elsewhere + "/target.pt"}) {
    EXPECT_TRUE(fs::exists(path)) << path;
    if (path != elsewhere + "/target.pt") {
      EXPECT_TRUE(fs::exists(ManifestPathFor(path))) << path;
    }
  }
  // A folder swapped for a symlink after the commit: checked again at deletion, nothing outside goes.
  const std::string kept = inside[2];
  fs::rename(job_dir + "/checkpoints", job_dir + "/moved");
  fs::create_directory_symlink(elsewhere, job_dir + "/checkpoints");
  const std::string decoy = elsewhere + "/" + fs::path(kept).filename().string();
  std::ofstream(decoy) << "someone else's file";
  std::ofstream(ManifestPathFor(decoy)) << "{}";
  fs::create_directories(job_dir + "/real");
  ReportCheckpoint("w1", a, step + 1000, CheckpointPath(job_dir + "/real", step + 1000), {{"loss", 0.9}});
  EXPECT_TRUE(fs::exists(decoy));
  EXPECT_TRUE(fs::exists(ManifestPathFor(decoy)));
  EXPECT_GE(CountEvents("checkpoint_delete_failed"), 1u);
}

TEST_F(CoordinatorServiceTest, RolesDecideWhatReachesTheHandlers) {
  auto send = [&](const std::string& peer, proto::Envelope env, Role role) {
    env.set_sender(peer);
    env.set_request_id(11);
    svc_->HandleFrame(peer, EncodeEnvelope(env), role);
    svc_->Schedule();
    return Take(peer);
  };
  proto::Envelope shutdown;
  shutdown.mutable_shutdown();
  // Keyless (local): no shutdown by message.
  auto r = send("cli", shutdown, Role::kLocal);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_EQ(r[0].error().code(), static_cast<int>(absl::StatusCode::kPermissionDenied));
  EXPECT_FALSE(svc_->shutdown_requested());
  // A worker key cannot submit: nothing is stored.
  auto spec = ParseRunSpec(kChain, "chain.yaml");
  ASSERT_TRUE(spec.ok());
  proto::Envelope submit;
  *submit.mutable_submit()->mutable_spec() = *spec;
  submit.mutable_submit()->set_submission_id("s");
  r = send("w", submit, Role::kWorker);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_THAT(r[0].error().message(), ::testing::HasSubstr("a worker peer may not send SubmitRequest"));
  EXPECT_TRUE(store_->Load()->runs.empty());
  // A client key cannot register as a worker.
  proto::Envelope hello;
  hello.mutable_hello()->set_worker_id("fake");
  hello.mutable_hello()->set_slots(1);
  r = send("c", hello, Role::kClient);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].has_error());
  EXPECT_TRUE(store_->Load()->workers.empty());
  // Progress from a client: refused silently (a report, not a request).
  proto::Envelope progress;
  progress.mutable_progress()->set_attempt_id("x#1");
  EXPECT_TRUE(send("c", progress, Role::kClient).empty());
  EXPECT_EQ(svc_->rejected_frames(), 4);
  // A client submits; an admin shuts down.
  r = send("c", submit, Role::kClient);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_TRUE(r[0].has_submit_reply());
  r = send("a", shutdown, Role::kAdmin);
  ASSERT_EQ(r.size(), 1u);
  EXPECT_FALSE(r[0].has_error());
  EXPECT_TRUE(svc_->shutdown_requested());
  EXPECT_EQ(Status("")["coordinator"]["rejected_frames"], 4);
}

TEST_F(CoordinatorServiceTest, CheckpointsOfAReplacedAttemptAreIgnored) {
  Hello("w1");
  const std::string run = Submit(kRetained);
  Started("w1", "keep-1/d#1");
  Take("w1");
  Checkpoint("w1", "keep-1/d#2", 100);  // not an attempt it holds
  EXPECT_TRUE(CheckpointSteps(run, "committed").empty());
  auto msgs = Take("w1");  // acknowledged all the same, so the worker stops resending it
  ASSERT_EQ(msgs.size(), 1u);
  EXPECT_EQ(msgs[0].checkpoint_ack().attempt_id(), "keep-1/d#2");
}

TEST_F(CoordinatorServiceTest, CheckpointReportIsAcknowledgedOnceRecordedAndAgainWhenResent) {
  Hello("w1");
  const std::string run = Submit(kRetained);
  Started("w1", "keep-1/d#1");
  Take("w1");
  Checkpoint("w1", "keep-1/d#1", 100);
  Checkpoint("w1", "keep-1/d#1", 100);  // resent: the first ack was lost
  EXPECT_THAT(CheckpointSteps(run, "committed"), ::testing::ElementsAre(100));
  EXPECT_EQ(CountEvents("checkpoint_committed"), 1u);
  auto msgs = Take("w1");
  ASSERT_EQ(msgs.size(), 2u);
  for (const auto& m : msgs) {
    EXPECT_EQ(m.checkpoint_ack().attempt_id(), "keep-1/d#1");
    EXPECT_EQ(m.checkpoint_ack().step(), 100u);
  }
}

TEST_F(CoordinatorServiceTest, PreemptedAttemptIsRescheduledWithoutUsingARetry) {
  Hello("w1");
  const std::string run = Submit("name: p\njobs:\n  - {name: a, type: sleep, retries: 0}\n");
  ASSERT_EQ(Assigns("w1").size(), 1u);
  Started("w1", "p-1/a#1");
  Stopped("w1", "p-1/a#1", /*preempted=*/true);
  auto again = Assigns("w1");
  ASSERT_EQ(again.size(), 1u) << "rescheduled at once, although retries is 0";
  EXPECT_EQ(again[0].attempt_id(), "p-1/a#2");
  Started("w1", "p-1/a#2");
  Finished("w1", "p-1/a#2", 0);
  EXPECT_EQ(Status(run)["run"]["state"], "succeeded");
  EXPECT_EQ(CountEvents("attempt_preempted"), 1u);
  EXPECT_EQ(CountEvents("job_retrying"), 0u);
}

TEST_F(CoordinatorServiceTest, GangGetsRanksAndAFreshRendezvousPerAttempt) {
  Hello("w1");
  Hello("w2");
  Submit("name: g\njobs:\n  - {name: a, type: sleep, retries: 0, resources: {workers: 2}}\n");
  auto a1 = Assigns("w1"), a2 = Assigns("w2");
  ASSERT_EQ(a1.size(), 1u);
  ASSERT_EQ(a2.size(), 1u);
  EXPECT_EQ(a1[0].world_size(), 2u);
  EXPECT_EQ(a1[0].rank() + a2[0].rank(), 1u);
  EXPECT_EQ(a1[0].rendezvous(), a2[0].rendezvous());
  EXPECT_THAT(a1[0].rendezvous(), ::testing::StartsWith("tcp://test:"));
  // Rank 1 reports its peer gone: infrastructure, so the job is retried although retries is 0.
  proto::Envelope env;
  env.mutable_attempt_finished()->set_attempt_id("g-1/a#1");
  env.mutable_attempt_finished()->set_exit_code(1);
  env.mutable_attempt_finished()->set_cause("gang peer lost: Connection closed by peer");
  Frame("w2", env);
  EXPECT_EQ(CountEvents("attempt_lost"), 1u);
  clock_.Advance(config_.retry_backoff_ms);
  svc_->Tick();
  auto b1 = Assigns("w1");
  ASSERT_EQ(b1.size(), 1u);
  EXPECT_EQ(b1[0].attempt_id(), "g-1/a#2");
  EXPECT_NE(b1[0].rendezvous(), a1[0].rendezvous());
}

// A gang rank that finishes first is acknowledged only when the whole gang is done: its worker
// keeps holding the report, so a coordinator restart in between loses no rank's success (the
// chaos harness found the attempt lost and redone when the first rank's report was acked early).
TEST_F(CoordinatorServiceTest, GangRankFinishedBeforeACoordinatorRestartStillCounts) {
  Hello("w1");
  Hello("w2");
  Submit("name: g\njobs:\n  - {name: a, type: sleep, retries: 0, resources: {workers: 2}}\n");
  ASSERT_EQ(Assigns("w1").size(), 1u);
  ASSERT_EQ(Assigns("w2").size(), 1u);
  Finished("w2", "g-1/a#1", 0);
  EXPECT_TRUE(Take("w2").empty()) << "no ack while rank 0 still runs";
  Restart();
  Hello("w1", {"g-1/a#1"});
  proto::Envelope hello;
  auto* h = hello.mutable_hello();
  h->set_worker_id("w2");
  h->set_host("test");
  h->set_device("cpu");
  h->set_slots(1);
  auto* held = h->add_attempts();
  held->set_attempt_id("g-1/a#1");
  held->set_finished(true);
  Frame("w2", hello);
  EXPECT_EQ(CountEvents("attempt_lost"), 0u);
  Finished("w2", "g-1/a#1", 0);  // resent after the restart
  Take("w1");
  Take("w2");
  Finished("w1", "g-1/a#1", 0);
  EXPECT_EQ(Status("g-1")["run"]["state"], "succeeded");
  auto acked = [&](const std::string& w) {
    for (const auto& e : Take(w)) {
      if (e.has_finished_ack() && e.finished_ack().attempt_id() == "g-1/a#1") return true;
    }
    return false;
  };
  EXPECT_TRUE(acked("w1"));
  EXPECT_TRUE(acked("w2")) << "the rank that finished first is acknowledged with the last";
  EXPECT_EQ(CountEvents("job_succeeded"), 1u);
}

TEST_F(CoordinatorServiceTest, CommittedCheckpointsGetEvalJobsEveryNSteps) {
  Hello("w1");
  const std::string run = Submit(R"(
name: ev
jobs:
  - name: d
    type: distill
    eval_every: {steps: 200, params: {samples: 50}}
)");
  Started("w1", "ev-1/d#1");
  Checkpoint("w1", "ev-1/d#1", 100);
  Checkpoint("w1", "ev-1/d#1", 200);
  std::vector<std::string> names;
  Json eval;
  const Json jobs = Jobs(run);
  for (const auto& j : jobs["jobs"]) {
    names.push_back(j["name"]);
    if (j["name"] == "d-eval-200") eval = j;
  }
  EXPECT_THAT(names, ::testing::ElementsAre("d", "d-eval-200"));
  ASSERT_FALSE(eval.is_null());
  EXPECT_EQ(eval["type"], "eval");
  Restart();  // dynamic jobs survive a restart
  names.clear();
  const Json after_restart = Jobs(run);
  for (const auto& j : after_restart["jobs"]) names.push_back(j["name"]);
  EXPECT_THAT(names, ::testing::ElementsAre("d", "d-eval-200"));
}

TEST_F(CoordinatorServiceTest, DrainingWorkerGetsNoNewWork) {
  Hello("w1");
  proto::Envelope env;
  env.mutable_heartbeat()->set_worker_id("w1");
  env.mutable_heartbeat()->set_draining(true);
  Frame("w1", env);
  Submit("name: d\njobs:\n  - {name: a, type: sleep}\n");
  EXPECT_TRUE(Assigns("w1").empty());
  EXPECT_EQ(CountEvents("worker_draining"), 1u);
  Hello("w2");
  EXPECT_EQ(Assigns("w2").size(), 1u);
}

TEST_F(CoordinatorServiceTest, WorkerWhoseConnectionIsGoneIsLost) {
  Hello("w1");
  svc_->CountSendFailure("w1", /*gone=*/true);
  svc_->Schedule();
  EXPECT_EQ(CountEvents("worker_lost"), 1u);
}

// ---- SLURM ----

// SLURM's commands as the coordinator sees them: submissions counted, answers scripted.
struct FakeSlurmState {
  int submits = 0;
  std::vector<std::string> scripts;
  std::deque<absl::StatusOr<std::string>> answers;   // empty: "100", "101", ...
  std::map<std::string, SlurmJobInfo> jobs;          // what Query returns
};

class FakeSlurm : public SlurmCommands {
 public:
  explicit FakeSlurm(FakeSlurmState* s) : s_(s) {}
  absl::StatusOr<std::string> Submit(const std::string& script) override {
    ++s_->submits;
    s_->scripts.push_back(script);
    if (!s_->answers.empty()) {
      auto a = s_->answers.front();
      s_->answers.pop_front();
      return a;
    }
    return std::to_string(99 + s_->submits);
  }
  absl::StatusOr<std::map<std::string, SlurmJobInfo>> Query(const std::string&) override { return s_->jobs; }
  absl::StatusOr<std::string> FinalState(const std::string&) override { return absl::NotFoundError("no sacct"); }
  absl::Status Cancel(const std::string&) override { return absl::OkStatus(); }

 private:
  FakeSlurmState* s_;
};

class SlurmServiceTest : public CoordinatorServiceTest {
 protected:
  void Autoscaled() {
    AutoscaleConfig c;
    c.device = "cpu";
    c.gpus_per_node = 2;
    c.wait_s = 10;
    c.poll_s = 1;
    c.sbatch_backoff_s = 30;
    SlurmLaunchSpec base;
    base.coordinator = "tcp://127.0.0.1:5555";
    base.home = "/shared/dd2";
    base.worker_binary = "/opt/dd2-worker";
    svc_->SetSlurm(std::make_unique<FakeSlurm>(&slurm_), c, base);
  }
  Json Allocations() {
    proto::Envelope env;
    env.mutable_slurm_list();
    Frame("client", env);
    return Json::parse(Take("client").back().json_reply().json());
  }
  FakeSlurmState slurm_;
};

TEST_F(SlurmServiceTest, HelloRecordsTheSlurmTaskOfAWorker) {
  proto::Envelope env;
  auto* h = env.mutable_hello();
  h->set_worker_id("slurm-7-1");
  h->set_host("gpu07");
  h->set_device("cuda");
  h->set_device_index(1);
  h->set_slots(1);
  h->mutable_slurm()->set_job_id("7");
  h->mutable_slurm()->set_procid(1);
  h->mutable_slurm()->set_localid(1);
  h->mutable_slurm()->set_restart_count(2);
  h->mutable_slurm()->set_node("gpu07");
  Frame("slurm-7-1", env);
  proto::Envelope req;
  req.mutable_workers();
  Frame("client", req);
  Json w = Json::parse(Take("client").back().json_reply().json())["workers"][0];
  EXPECT_EQ(w["slurm"], (Json{{"job_id", "7"}, {"procid", 1}, {"localid", 1}, {"restart_count", 2}, {"node", "gpu07"}}));
  Restart();  // and from the store after a restart
  Frame("client", req);
  EXPECT_EQ(Json::parse(Take("client").back().json_reply().json())["workers"][0]["slurm"]["restart_count"], 2);
}

TEST_F(SlurmServiceTest, SlurmCausesKeepTheirNamesAndCancellationUsesTheLostBudget) {
  Hello("w1");
  const std::string run = Submit("name: p\njobs:\n  - {name: a, type: sleep, retries: 0}\n");
  ASSERT_EQ(Assigns("w1").size(), 1u);
  Started("w1", "p-1/a#1");
  Stopped("w1", "p-1/a#1", /*preempted=*/true, "slurm timeout");
  ASSERT_EQ(Assigns("w1").size(), 1u) << "a time limit uses no retry";
  Started("w1", "p-1/a#2");
  Stopped("w1", "p-1/a#2", /*preempted=*/false, "slurm cancelled", /*infrastructure=*/true);
  Json jobs = Jobs(run);
  const Json& attempts = jobs["jobs"][0]["attempts_detail"];
  ASSERT_EQ(attempts.size(), 2u);
  EXPECT_EQ(attempts[0]["state"], "preempted");
  EXPECT_EQ(attempts[0]["cause"], "slurm timeout");
  EXPECT_EQ(attempts[1]["state"], "lost");
  EXPECT_EQ(attempts[1]["cause"], "slurm cancelled");
  EXPECT_EQ(jobs["jobs"][0]["state"], "retrying") << "retries: 0, but a cancelled allocation is not the job's fault";
}

TEST_F(SlurmServiceTest, AutoscalerSubmitsOnceForWaitingJobsAndNotAgainAfterARestart) {
  Autoscaled();
  Submit("name: p\njobs:\n  - {name: a, type: sleep}\n  - {name: b, type: sleep}\n  - {name: c, type: sleep}\n");
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 0) << "the jobs have not waited 10 s yet";
  clock_.Advance(11000);
  svc_->Tick();
  ASSERT_EQ(slurm_.submits, 1);
  EXPECT_THAT(slurm_.scripts[0], ::testing::HasSubstr("#SBATCH --nodes=2"));  // 3 workers, 2 per node
  EXPECT_THAT(slurm_.scripts[0], ::testing::HasSubstr("--idle-exit-s 300"));
  EXPECT_THAT(slurm_.scripts[0], ::testing::HasSubstr("#SBATCH --job-name=dd2-alloc-1"));
  slurm_.jobs["100"] = {"dd2-alloc-1", "PENDING", "Resources", 0, 0, -1};
  for (int i = 0; i < 5; ++i) {
    clock_.Advance(2000);
    svc_->Tick();
  }
  EXPECT_EQ(slurm_.submits, 1) << "its 4 workers are coming";
  Json a = Allocations()["allocations"];
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["slurm_job_id"], "100");
  EXPECT_EQ(a[0]["state"], "PENDING");
  EXPECT_EQ(a[0]["origin"], "autoscale");
  Restart();
  Autoscaled();
  clock_.Advance(2000);
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 1) << "the pending allocation is remembered";
  // It ends without ever starting a worker: a failure, so the next one waits out the backoff.
  slurm_.jobs["100"].state = "FAILED";
  slurm_.jobs["100"].reason = "JobLaunchFailure";
  clock_.Advance(2000);
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 1);
  EXPECT_EQ(CountEvents("autoscale_allocation_failed"), 1u);
  clock_.Advance(31000);
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 2);
  EXPECT_EQ(CountEvents("autoscale_submit"), 2u);
}

TEST_F(SlurmServiceTest, AnInterruptedSubmissionIsFoundByItsJobNameAfterARestart) {
  // The coordinator died after committing its intent and before recording sbatch's answer.
  StoreTx tx;
  tx.allocations.push_back({"alloc-1", 1, "autoscale", "", 1, 2, "cpu", "", "", "", "#!/bin/bash\n", "submitting", "", 0,
                            clock_.NowMs(), clock_.NowMs()});
  ASSERT_TRUE(store_->Apply(tx).ok());
  slurm_.jobs["555"] = {"dd2-alloc-1", "RUNNING", "None", 0, 5, -1};
  Restart();
  Autoscaled();
  Submit("name: p\njobs:\n  - {name: a, type: sleep}\n");
  clock_.Advance(11000);
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 0) << "the adopted allocation's workers are coming";
  Json a = Allocations()["allocations"];
  ASSERT_EQ(a.size(), 1u);
  EXPECT_EQ(a[0]["slurm_job_id"], "555");
  EXPECT_EQ(a[0]["state"], "RUNNING");
  EXPECT_EQ(CountEvents("slurm_adopted"), 1u);
}

TEST_F(SlurmServiceTest, FailedSbatchBacksOffAndSaysWhy) {
  Autoscaled();
  slurm_.answers = {absl::UnavailableError("sbatch: error: invalid partition specified: nope")};
  Submit("name: p\njobs:\n  - {name: a, type: sleep}\n");
  clock_.Advance(11000);
  svc_->Tick();
  ASSERT_EQ(slurm_.submits, 1);
  Json doc = Allocations();
  EXPECT_EQ(doc["allocations"][0]["state"], "sbatch failed");
  EXPECT_THAT(doc["allocations"][0]["reason"].get<std::string>(), ::testing::HasSubstr("invalid partition"));
  EXPECT_EQ(doc["autoscale"]["sbatch_failures"], 1);
  clock_.Advance(20000);
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 1) << "30 s of backoff";
  EXPECT_THAT(Allocations()["autoscale"]["last_decision"].get<std::string>(), ::testing::HasSubstr("backing off"));
  for (int i = 0; i < 4; ++i) {  // polls during the backoff: its countdown changes, the event does not repeat
    clock_.Advance(1000);
    svc_->Tick();
  }
  EXPECT_EQ(CountEvents("autoscale_waiting"), 1u);
  clock_.Advance(7000);
  svc_->Tick();
  EXPECT_EQ(slurm_.submits, 2);
}

TEST_F(SlurmServiceTest, RecordedAllocationFollowsSlurmsStateAndAResendIsTheSame) {
  svc_->SetSlurm(std::make_unique<FakeSlurm>(&slurm_), std::nullopt, SlurmLaunchSpec{});
  proto::Envelope env;
  auto* a = env.mutable_slurm_record()->mutable_allocation();
  a->set_slurm_job_id("42");
  a->set_nodes(1);
  a->set_workers_per_node(2);
  a->set_device("cpu");
  a->set_script("#!/bin/bash\n");
  Frame("client", env);
  EXPECT_EQ(Take("client").back().slurm_record_reply().id(), "alloc-1");
  Frame("client", env);
  EXPECT_EQ(Take("client").back().slurm_record_reply().id(), "alloc-1");
  slurm_.jobs["42"] = {"dd2-workers", "RUNNING", "None", 0, 3, -1};
  svc_->Tick();
  EXPECT_EQ(Allocations()["allocations"][0]["state"], "RUNNING");
  slurm_.jobs.clear();  // SLURM forgot it
  clock_.Advance(6000);
  svc_->Tick();
  EXPECT_EQ(Allocations()["allocations"][0]["state"], "ended");
  a->set_slurm_job_id("x; rm");
  Frame("client", env);
  EXPECT_EQ(Take("client").back().error().code(), static_cast<int>(absl::StatusCode::kInvalidArgument));
  a->set_slurm_job_id("43");
  env.set_version(99);  // another protocol version records nothing
  Frame("client", env);
  EXPECT_EQ(Take("client").back().error().code(), static_cast<int>(absl::StatusCode::kFailedPrecondition));
  EXPECT_EQ(Allocations()["allocations"].size(), 1u);
}

}  // namespace
}  // namespace dd2
