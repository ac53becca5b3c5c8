// One suite, every JobStore: the in-memory store and the SQLite store must behave the same.
#include <sqlite3.h>

#include <gtest/gtest.h>

#include "coordinator/job_store.h"
#include "tests/testing/test_util.h"

namespace dd2 {
namespace {

struct InMemoryFactory {
  std::unique_ptr<JobStore> Make() { return NewInMemoryJobStore(); }
};

struct SqliteFactory {
  testing::TempDir dir;
  std::unique_ptr<JobStore> Make() {
    auto store = OpenSqliteJobStore(dir.path() + "/state.db");
    EXPECT_TRUE(store.ok()) << store.status();
    return std::move(store).value();
  }
};

template <typename Factory>
class JobStoreConformanceTest : public ::testing::Test {
 protected:
  void SetUp() override { store_ = factory_.Make(); }

  static StoreTx NewRun(const std::string& id, const std::string& submission) {
    StoreTx tx;
    tx.runs.push_back({id, submission, "demo", std::string("\x00\x01spec", 6), "running", 0,
                       static_cast<int64_t>(std::hash<std::string>()(id) % 100000), 100, 0});
    tx.jobs.push_back({id + "/a", id, "a", "sleep", "{}", "[]", 1, "any", 2, 0, "ready", 0, 0, 0, 0, "", 100});
    tx.events.push_back({0, 100, id, "", "", "run_submitted", ""});
    return tx;
  }

  Factory factory_;
  std::unique_ptr<JobStore> store_;
};

using Factories = ::testing::Types<InMemoryFactory, SqliteFactory>;
TYPED_TEST_SUITE(JobStoreConformanceTest, Factories);

TYPED_TEST(JobStoreConformanceTest, AppliedRowsLoadBackUnchanged) {
  StoreTx tx = this->NewRun("r-1", "sub-1");
  tx.attempts.push_back({"r-1/a#1", "r-1/a", 1, "running", "w1,w2", 110, 0, 0, 0, ""});
  tx.workers.push_back({"w1", "host", "cpu", 0, 2, 42, "alive", 90, 95});
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  ASSERT_EQ(snap->runs.size(), 1u);
  EXPECT_EQ(snap->runs[0], tx.runs[0]);
  EXPECT_EQ(snap->jobs, tx.jobs);
  EXPECT_EQ(snap->attempts, tx.attempts);
  EXPECT_EQ(snap->workers, tx.workers);
}

TYPED_TEST(JobStoreConformanceTest, UpsertReplacesMutableFields) {
  ASSERT_TRUE(this->store_->Apply(this->NewRun("r-1", "sub-1")).ok());
  StoreTx tx;
  JobRecord job{"r-1/a", "r-1", "a", "sleep", "{}", "[]", 1, "any", 2, 0, "succeeded", 1, 0, 10, 10, "", 200};
  tx.jobs.push_back(job);
  RunRecord run = this->NewRun("r-1", "sub-1").runs[0];
  run.state = "succeeded";
  run.finished_ms = 300;
  tx.runs.push_back(run);
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->jobs[0], job);
  EXPECT_EQ(snap->runs[0].state, "succeeded");
  EXPECT_EQ(snap->runs[0].finished_ms, 300);
}

TYPED_TEST(JobStoreConformanceTest, CheckpointsUpsertByJobAndStepAndLoadInOrder) {
  StoreTx tx = this->NewRun("r-1", "sub-1");
  CheckpointRecord late{"r-1", "r-1/a", "r-1/a#1", 200, "/x/step-200.pt", "ab", 10, "committed", 120, "{}"};
  CheckpointRecord early{"r-1", "r-1/a", "r-1/a#1", 100, "/x/step-100.pt", "cd", 11, "committed", 110, R"({"loss":1})"};
  tx.checkpoints = {late, early};
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  StoreTx update;
  CheckpointRecord deleting = early;
  deleting.state = "deleting";
  deleting.created_ms = 999;  // not mutable
  update.checkpoints = {deleting};
  ASSERT_TRUE(this->store_->Apply(update).ok());
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  ASSERT_EQ(snap->checkpoints.size(), 2u);
  EXPECT_EQ(snap->checkpoints[0].step, 100);
  EXPECT_EQ(snap->checkpoints[0].state, "deleting");
  EXPECT_EQ(snap->checkpoints[0].created_ms, 110);
  EXPECT_EQ(snap->checkpoints[0].metrics_json, R"({"loss":1})");
  EXPECT_EQ(snap->checkpoints[1], late);
}

TYPED_TEST(JobStoreConformanceTest, DuplicateSubmissionIdIsRejectedAndNothingIsApplied) {
  ASSERT_TRUE(this->store_->Apply(this->NewRun("r-1", "same")).ok());
  absl::Status st = this->store_->Apply(this->NewRun("r-2", "same"));
  EXPECT_EQ(st.code(), absl::StatusCode::kAlreadyExists);
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->runs.size(), 1u);
  EXPECT_EQ(snap->jobs.size(), 1u);
  auto events = this->store_->Events({});
  ASSERT_TRUE(events.ok());
  EXPECT_EQ(events->size(), 1u);
}

TYPED_TEST(JobStoreConformanceTest, EventsKeepOrderAndFilter) {
  ASSERT_TRUE(this->store_->Apply(this->NewRun("r-1", "s1")).ok());
  ASSERT_TRUE(this->store_->Apply(this->NewRun("r-2", "s2")).ok());
  StoreTx tx;
  tx.events.push_back({0, 5, "r-1", "r-1/a", "r-1/a#1", "job_succeeded", "x"});
  tx.events.push_back({0, 6, "r-2", "r-2/a", "", "job_failed", "y"});
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  auto all = this->store_->Events({});
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 4u);
  for (size_t i = 1; i < all->size(); ++i) EXPECT_LT((*all)[i - 1].id, (*all)[i].id);
  auto succeeded = this->store_->Events({"", "", "job_succeeded"});
  ASSERT_TRUE(succeeded.ok());
  ASSERT_EQ(succeeded->size(), 1u);
  EXPECT_EQ((*succeeded)[0].attempt_id, "r-1/a#1");
  auto run2 = this->store_->Events({"r-2", "", ""});
  ASSERT_TRUE(run2.ok());
  EXPECT_EQ(run2->size(), 2u);
}

TYPED_TEST(JobStoreConformanceTest, MetricsAtTheSameStepReplaceAndComeBackSorted) {
  ASSERT_TRUE(this->store_->Apply(this->NewRun("r-1", "s1")).ok());
  StoreTx tx;
  tx.metrics.push_back({"r-1", "r-1/a", "loss", 2, 0.5, 1});
  tx.metrics.push_back({"r-1", "r-1/a", "loss", 1, 0.9, 1});
  tx.metrics.push_back({"r-1", "r-1/a", "acc", 1, 0.1, 1});
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  StoreTx again;
  again.metrics.push_back({"r-1", "r-1/a", "loss", 2, 0.4, 2});
  ASSERT_TRUE(this->store_->Apply(again).ok());
  auto m = this->store_->Metrics("r-1/a");
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 3u);
  EXPECT_EQ((*m)[0].key, "acc");
  EXPECT_EQ((*m)[1].step, 1);
  EXPECT_DOUBLE_EQ((*m)[2].value, 0.4);
}

TYPED_TEST(JobStoreConformanceTest, LatestMetricsAreTheHighestStepOfEachKey) {
  ASSERT_TRUE(this->store_->Apply(this->NewRun("r-1", "s1")).ok());
  StoreTx tx;
  tx.metrics.push_back({"r-1", "r-1/a", "loss", 3, 0.3, 1});
  tx.metrics.push_back({"r-1", "r-1/a", "loss", 10, 0.1, 1});
  tx.metrics.push_back({"r-1", "r-1/a", "loss", 7, 0.2, 1});
  tx.metrics.push_back({"r-1", "r-1/a", "acc", 1, 0.9, 1});
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  auto m = this->store_->LatestMetrics();
  ASSERT_TRUE(m.ok());
  ASSERT_EQ(m->size(), 2u);
  EXPECT_EQ((*m)[0].key, "acc");
  EXPECT_EQ((*m)[1].step, 10);
  EXPECT_DOUBLE_EQ((*m)[1].value, 0.1);
}

TYPED_TEST(JobStoreConformanceTest, SweepsPointsAndDecisionsLoadBack) {
  StoreTx tx = this->NewRun("r-1", "s1");
  tx.jobs[0].identity = std::string(64, 'a');
  tx.jobs[0].reused_from = "r-0/a";
  tx.jobs[0].outputs_path = "/x/outputs.json";
  tx.jobs[0].outputs_sha256 = std::string(64, 'b');
  tx.sweeps.push_back({"k-s1", "sub", "k", std::string("\x00spec", 5), 1, 100});
  tx.points.push_back({"k-s1", "id2", 2, R"({"k": 2})", "r-1"});
  tx.points.push_back({"k-s1", "id1", 1, R"({"k": 1})", "r-1"});
  tx.decisions.push_back({"k-s1", 10, "id1", true, 0.5, true, 100});
  tx.decisions.push_back({"k-s1", 10, "id2", false, 0, false, 100});
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->jobs, tx.jobs);
  EXPECT_EQ(snap->sweeps, tx.sweeps);
  ASSERT_EQ(snap->points.size(), 2u);
  EXPECT_EQ(snap->points[0], tx.points[1]);  // by number
  EXPECT_EQ(snap->decisions, tx.decisions);
  StoreTx dup;
  dup.sweeps.push_back({"k-s2", "sub", "k", "", 2, 100});
  EXPECT_TRUE(absl::IsAlreadyExists(this->store_->Apply(dup)));  // a sweep's submission id is unique
}

TYPED_TEST(JobStoreConformanceTest, SlurmAllocationsAndWorkerTasksLoadBackAndKeepWhatWasAsked) {
  StoreTx tx;
  WorkerRecord w{"slurm-7-1", "gpu07", "cuda", 1, 1, 42, "alive", 90, 95, "7", 1, 1, 2, "gpu07"};
  tx.workers.push_back(w);
  SlurmAllocationRecord b{"alloc-2", 2, "autoscale", "", 2, 4, "cuda", "gpu", "4:00:00", "lab", "#!/bin/bash\n",
                          "submitting", "", 0, 100, 100};
  SlurmAllocationRecord a{"alloc-1", 1, "launch", "7", 1, 2, "cpu", "", "", "", "script", "PENDING", "", 0, 90, 90};
  tx.allocations = {b, a};
  ASSERT_TRUE(this->store_->Apply(tx).ok());
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  EXPECT_EQ(snap->workers, tx.workers);
  ASSERT_EQ(snap->allocations.size(), 2u);
  EXPECT_EQ(snap->allocations[0], a);  // by seq
  EXPECT_EQ(snap->allocations[1], b);
  // Updates change SLURM's side only.
  SlurmAllocationRecord changed = b;
  changed.slurm_job_id = "8";
  changed.state = "RUNNING";
  changed.reason = "None";
  changed.restarts = 1;
  changed.updated_ms = 200;
  changed.nodes = 99;
  changed.script = "other";
  StoreTx up;
  up.allocations.push_back(changed);
  ASSERT_TRUE(this->store_->Apply(up).ok());
  snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  SlurmAllocationRecord want = changed;  // what was asked stays
  want.nodes = b.nodes;
  want.script = b.script;
  EXPECT_EQ(snap->allocations[1], want);
}

TYPED_TEST(JobStoreConformanceTest, EmptyTransactionIsFine) {
  EXPECT_TRUE(this->store_->Apply(StoreTx{}).ok());
  auto snap = this->store_->Load();
  ASSERT_TRUE(snap.ok());
  EXPECT_TRUE(snap->runs.empty());
}

TEST(SqliteJobStoreTest, ReopeningTheFileKeepsEverything) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/state.db";
  {
    auto store = OpenSqliteJobStore(path);
    ASSERT_TRUE(store.ok());
    StoreTx tx;
    tx.runs.push_back({"r-1", "s", "demo", "spec", "running", 0, 1, 1, 0});
    tx.events.push_back({0, 1, "r-1", "", "", "run_submitted", ""});
    ASSERT_TRUE((*store)->Apply(tx).ok());
  }
  auto store = OpenSqliteJobStore(path);
  ASSERT_TRUE(store.ok());
  auto snap = (*store)->Load();
  ASSERT_TRUE(snap.ok());
  ASSERT_EQ(snap->runs.size(), 1u);
  EXPECT_EQ(snap->runs[0].id, "r-1");
}

TEST(SqliteJobStoreTest, RefusesASchemaNewerThanItKnows) {
  testing::TempDir dir;
  const std::string path = dir.path() + "/state.db";
  sqlite3* db = nullptr;
  ASSERT_EQ(sqlite3_open(path.c_str(), &db), SQLITE_OK);
  ASSERT_EQ(sqlite3_exec(db, "PRAGMA user_version=999", nullptr, nullptr, nullptr), SQLITE_OK);
  sqlite3_close(db);
  auto store = OpenSqliteJobStore(path);
  ASSERT_FALSE(store.ok());
  EXPECT_EQ(store.status().code(), absl::StatusCode::kFailedPrecondition);
}

}  // namespace
}  // namespace dd2
