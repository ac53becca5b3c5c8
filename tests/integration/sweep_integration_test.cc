// Sweeps and job memoization through a real local cluster (dd2ctl up: coordinator, workers,
// SQLite file) with sleep jobs standing in for the DD2 stages: upstream stages run once for all
// points, resubmission adds nothing, extension runs only the new point, identical jobs of two
// runs run once, a corrupted artifact is not reused, successive halving survives kill -9 of the
// coordinator with the same decisions, and dd2ctl report draws real PNGs.
#include <png.h>
#include <signal.h>

#include <cstdio>
#include <filesystem>
#include <regex>
#include <set>

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include "absl/strings/str_cat.h"
#include "tests/integration/cluster_fixture.h"

namespace dd2 {
namespace {

// The DD2 pipeline's shape in sleep jobs: four upstream stages and a swept `distill`.
std::string SweepYaml(const std::string& ks, int seeds, const std::string& extra = "") {
  return absl::StrCat(R"(name: ksweep
jobs:
  - {name: tokenizer, type: sleep, params: {seconds: 0.3, steps: 3, output_bytes: 64}}
  - {name: featurenet, type: sleep, params: {seconds: 0.3, steps: 3, output_bytes: 65}}
  - {name: teacher, type: sleep, after: [tokenizer], params: {seconds: 0.3, steps: 3, output_bytes: 64}}
  - {name: tune, type: sleep, after: [teacher], params: {seconds: 0.3, steps: 3, output_bytes: 64}}
  - {name: distill, type: sleep, after: [tune, featurenet], params: {seconds: 0.4, steps: 4, output_bytes: 16}}
sweep:
  grid: {jobs.distill.params.loss_scale: [)", ks, R"(]}
  seeds: )", seeds, R"(
  objective: {job: distill, metric: loss}
)", extra);
}

class SweepTest : public ClusterTest {
 protected:
  int Count(const std::string& query) {
    auto rows = Sql(query);
    return rows.empty() ? -1 : std::stoi(rows[0]);
  }
  int Succeeded(const std::string& job_name) {
    return Count(absl::StrCat("SELECT COUNT(*) FROM events WHERE kind = 'job_succeeded' AND job_id LIKE '%/", job_name,
                              "'"));
  }
  // (rung, identity, kept, value) of every halving decision.
  std::vector<std::string> Decisions() {
    return Sql("SELECT rung || ' ' || identity || ' ' || kept || ' ' || IFNULL(value, '-') FROM sweep_decisions "
               "ORDER BY rung, identity");
  }
  bool SweepFinished(const std::string& id) {
    Json j = CtlJson({"sweep", "status", id});
    return !j.is_discarded() && j["sweep"]["state"] == "finished";
  }
};

TEST_F(SweepTest, UpstreamStagesRunOnceResubmittingAddsNothingAndExtendingRunsOnlyTheNewPoint) {
  Up(2);
  const std::string file = WriteYaml("k.yaml", SweepYaml("1, 2", 2));
  Json sub = CtlJson({"submit", file, "--id", "k1"});
  ASSERT_EQ(sub["added"], 4) << sub.dump();
  const std::string sweep = sub["sweep_id"];
  ASSERT_TRUE(WaitFor([&] { return SweepFinished(sweep); }, 120));
  for (const char* up : {"tokenizer", "featurenet", "teacher", "tune"}) EXPECT_EQ(Succeeded(up), 1) << up;
  EXPECT_EQ(Succeeded("distill"), 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM events WHERE kind = 'job_reused'"), 12);  // 3 points x 4 stages
  Json st = CtlJson({"sweep", "status", sweep});
  ASSERT_EQ(st["sweep"]["point_rows"].size(), 4u);
  std::set<double> finals;
  for (const auto& p : st["sweep"]["point_rows"]) {
    EXPECT_EQ(p["state"], "succeeded");
    ASSERT_TRUE(p["final"].contains("loss")) << p.dump();
    finals.insert(p["final"]["loss"].get<double>());
  }
  EXPECT_EQ(finals, (std::set<double>{0.25, 0.5}));  // loss_scale / 4 steps
  EXPECT_EQ(st["sweep"]["point_rows"][0]["best"], true);
  ASSERT_EQ(st["sweep"]["grouped"].size(), 2u);
  EXPECT_EQ(st["sweep"]["grouped"][0]["final"]["loss"]["n"], 2);
  EXPECT_TRUE(st["sweep"]["early_stop"].is_null()) << "no early_stop block: null, not the brief's yes/no";
  // The table of a sweep without early stopping (it once crashed on the brief's boolean).
  auto table = Ctl({"sweep", "status", sweep});
  EXPECT_EQ(table.exit_code, 0) << table.err;
  EXPECT_THAT(table.out, ::testing::HasSubstr("objective:"));
  // dd2ctl jobs and status name the source of a reused job.
  const std::string second = st["sweep"]["point_rows"][1]["run"];
  Json jobs = CtlJson({"jobs", second});
  EXPECT_THAT(jobs["jobs"][0]["reused_from"].get<std::string>(), ::testing::EndsWith("/tokenizer"));
  EXPECT_THAT(Ctl({"jobs", second}).out, ::testing::HasSubstr("reused the outputs of"));
  EXPECT_THAT(Ctl({"status", second}).out, ::testing::HasSubstr("succeeded (reused "));

  // The same file again: no run, no job.
  const int runs = Count("SELECT COUNT(*) FROM runs"), all_jobs = Count("SELECT COUNT(*) FROM jobs");
  Json again = CtlJson({"submit", file, "--id", "k1"});
  EXPECT_EQ(again["added"], 0);
  EXPECT_EQ(again["existing"], 4);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM runs"), runs);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM jobs"), all_jobs);

  // One more K value: only its distill runs (one per seed).
  const int attempts = Count("SELECT COUNT(*) FROM attempts");
  Json ext = CtlJson({"sweep", "extend", sweep, WriteYaml("k2.yaml", SweepYaml("1, 2, 4", 2))});
  EXPECT_EQ(ext["added"], 2) << ext.dump();
  ASSERT_TRUE(WaitFor([&] { return SweepFinished(sweep); }, 120));
  EXPECT_EQ(Succeeded("distill"), 6);
  for (const char* up : {"tokenizer", "featurenet", "teacher", "tune"}) EXPECT_EQ(Succeeded(up), 1) << up;
  EXPECT_EQ(Count("SELECT COUNT(*) FROM attempts"), attempts + 2);

  // The report: every PNG decodes, is not blank, and is linked from report.md.
  const std::string out = dir_.path() + "/report";
  auto rep = Ctl({"report", sweep, "--out", out});
  ASSERT_EQ(rep.exit_code, 0) << rep.out << rep.err;
  auto md = ReadFile(out + "/report.md");
  ASSERT_TRUE(md.ok());
  int pngs = 0;
  for (const auto& e : std::filesystem::directory_iterator(out)) {
    if (e.path().extension() != ".png") continue;
    ++pngs;
    SCOPED_TRACE(e.path().string());
    EXPECT_THAT(*md, ::testing::HasSubstr("](" + e.path().filename().string() + ")"));
    png_image image{};
    image.version = PNG_IMAGE_VERSION;
    ASSERT_TRUE(png_image_begin_read_from_file(&image, e.path().c_str()));
    image.format = PNG_FORMAT_GRAY;
    std::vector<unsigned char> pixels(PNG_IMAGE_SIZE(image));
    ASSERT_TRUE(png_image_finish_read(&image, nullptr, pixels.data(), 0, nullptr));
    double mean = 0, var = 0;
    for (unsigned char p : pixels) mean += p;
    mean /= static_cast<double>(pixels.size());
    for (unsigned char p : pixels) var += (p - mean) * (p - mean);
    EXPECT_GT(var / static_cast<double>(pixels.size()), 10.0) << "blank image";
    EXPECT_GE(image.width, 600u);
  }
  EXPECT_GE(pngs, 2);  // the final loss against K, and distill's loss during training
  EXPECT_THAT(*md, ::testing::HasSubstr("final-loss-vs-jobs.distill.params.loss_scale.png"));
}

TEST_F(SweepTest, TwoRunsWithAnIdenticalUpstreamJobRunItOnce) {
  Up(2);
  const std::string a = WriteYaml("a.yaml", R"(name: a
jobs:
  - {name: prep, type: sleep, params: {seconds: 2, steps: 4, output_bytes: 32}}
  - {name: own, type: sleep, after: [prep], params: {seconds: 0.2, steps: 2, loss_scale: 1}}
)");
  const std::string b = WriteYaml("b.yaml", R"(name: b
jobs:
  - {name: prep, type: sleep, params: {seconds: 2, steps: 4, output_bytes: 32}}
  - {name: own, type: sleep, after: [prep], params: {seconds: 0.2, steps: 2, loss_scale: 2}}
)");
  const std::string ra = SubmitJson(a), rb = SubmitJson(b);
  ASSERT_TRUE(WaitFor([&] { return RunState(ra) == "succeeded" && RunState(rb) == "succeeded"; }, 60));
  EXPECT_EQ(Succeeded("prep"), 1);
  EXPECT_EQ(Count(absl::StrCat("SELECT COUNT(*) FROM events WHERE kind = 'job_waiting' AND job_id = '", rb, "/prep'")), 1);
  EXPECT_EQ(Count(absl::StrCat("SELECT COUNT(*) FROM attempts WHERE job_id = '", rb, "/prep'")), 0);
  EXPECT_EQ(Sql(absl::StrCat("SELECT reused_from FROM jobs WHERE id = '", rb, "/prep'")),
            std::vector<std::string>{ra + "/prep"});
  // --no-reuse runs it again.
  const std::string rc = CtlJson({"submit", b, "--no-reuse"}).value("run_id", "");
  ASSERT_TRUE(WaitFor([&] { return RunState(rc) == "succeeded"; }, 60));
  EXPECT_EQ(Succeeded("prep"), 2);
}

TEST_F(SweepTest, AReusedJobWhoseArtifactFailsItsChecksumRunsAgain) {
  Up(1);
  const std::string a = WriteYaml("a.yaml", R"(name: a
jobs:
  - {name: prep, type: sleep, params: {seconds: 0.2, steps: 2, output_bytes: 1000}}
)");
  const std::string ra = SubmitJson(a);
  ASSERT_TRUE(WaitFor([&] { return RunState(ra) == "succeeded"; }, 60));
  const std::string artifact = home_ + "/artifacts/" + ra + "/prep/output.bin";
  ASSERT_TRUE(std::filesystem::exists(artifact));
  {
    std::fstream f(artifact, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(10);
    f.put('!');  // one flipped byte: same size, different checksum
  }
  const std::string rb = SubmitJson(a);
  ASSERT_TRUE(WaitFor([&] { return RunState(rb) == "succeeded"; }, 60));
  EXPECT_EQ(Succeeded("prep"), 2);
  auto causes = Sql(absl::StrCat("SELECT detail FROM events WHERE kind = 'reuse_rejected' AND job_id = '", rb, "/prep'"));
  ASSERT_EQ(causes.size(), 1u);
  EXPECT_THAT(causes[0], ::testing::HasSubstr("sha256 mismatch"));
  EXPECT_THAT(causes[0], ::testing::HasSubstr("output.bin"));
  EXPECT_EQ(Sql(absl::StrCat("SELECT reused_from FROM jobs WHERE id = '", rb, "/prep'")), std::vector<std::string>{""});
  // A third identical run reuses the second's good outputs.
  const std::string rc = SubmitJson(a);
  ASSERT_TRUE(WaitFor([&] { return RunState(rc) == "succeeded"; }, 60));
  EXPECT_EQ(Succeeded("prep"), 2);
  EXPECT_EQ(Sql(absl::StrCat("SELECT reused_from FROM jobs WHERE id = '", rc, "/prep'")),
            std::vector<std::string>{rb + "/prep"});
}

const char kHalvingYaml[] = R"(name: halve
jobs:
  - {name: prep, type: sleep, params: {seconds: 0.2, steps: 2, output_bytes: 8}}
  - {name: train, type: sleep, after: [prep], params: {seconds: 6, steps: 6, checkpoint_every: 2}}
sweep:
  grid: {jobs.train.params.loss_scale: [4, 1, 3, 2]}
  early_stop: {job: train, metric: loss, mode: min, rungs: [2, 4], keep: 0.5}
  objective: {job: train, metric: loss}
)";

TEST_F(SweepTest, HalvingDecisionsSurviveKillingTheCoordinatorAndStoppedPointsNeverRunAgain) {
  // Uninterrupted, for reference.
  Up(4);
  const std::string file = WriteYaml("h.yaml", kHalvingYaml);
  const std::string ref = CtlJson({"submit", file})["sweep_id"];
  ASSERT_TRUE(WaitFor([&] { return SweepFinished(ref); }, 120));
  const auto expected = Decisions();
  ASSERT_EQ(expected.size(), 6u);  // 4 points at step 2, the 2 kept at step 4
  Json st = CtlJson({"sweep", "status", ref});
  std::map<double, std::string> by_scale;
  for (const auto& p : st["sweep"]["point_rows"]) {
    by_scale[p["values"]["jobs.train.params.loss_scale"].get<double>()] = p["state"];
  }
  EXPECT_EQ(by_scale, (std::map<double, std::string>{{1, "succeeded"}, {2, "stopped"}, {3, "stopped"}, {4, "stopped"}}));
  Ctl({"down"});

  // Interrupted: kill -9 after the first rung is decided, restart, and compare.
  home_ = dir_.path() + "/home2";
  Up(4);
  const std::string sweep = CtlJson({"submit", file})["sweep_id"];
  ASSERT_TRUE(WaitFor([&] { return Count("SELECT COUNT(*) FROM sweep_decisions") >= 4; }, 60));
  const int pid = Pid(home_ + "/coordinator.pid");
  ASSERT_EQ(::kill(pid, SIGKILL), 0);
  ASSERT_TRUE(WaitFor([&] { return ::kill(pid, 0) != 0; }, 10));
  const auto first_rung = Decisions();
  Up(4);  // the same home: the workers keep running
  ASSERT_TRUE(WaitFor([&] { return SweepFinished(sweep); }, 120));
  EXPECT_EQ(Decisions(), expected);
  const auto after = Decisions();
  EXPECT_TRUE(std::equal(first_rung.begin(), first_rung.end(), after.begin()));  // rung 1 unchanged
  // No job of a stopped point was assigned after the restart.
  auto restarts = Sql("SELECT id FROM events WHERE kind = 'coordinator_started' ORDER BY id");
  ASSERT_EQ(restarts.size(), 2u);
  EXPECT_EQ(Count(absl::StrCat("SELECT COUNT(*) FROM events e JOIN runs r ON e.run_id = r.id WHERE e.id > ", restarts[1],
                               " AND e.kind = 'attempt_assigned' AND r.state = 'stopped'")),
            0);
  EXPECT_EQ(Count("SELECT COUNT(*) FROM runs WHERE state = 'stopped'"), 3);
}

}  // namespace
}  // namespace dd2
