#include "tests/chaos/chaos.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "common/checkpoint_manifest.h"
#include "common/home.h"
#include "tests/testing/sql_rows.h"
#include "tests/testing/test_util.h"

namespace dd2::chaos {
namespace {

using Json = nlohmann::json;
using Clock = std::chrono::steady_clock;

constexpr int kWorkers = 3;

// Small budgets, but long enough that every planned fault finds its moment: the teacher and
// the distillation are 2-rank gangs, every training job checkpoints every few steps, and the
// distillation's checkpoints are scored by evals of their own.
constexpr char kRunYaml[] = R"(name: chaos
jobs:
  - {name: tokenizer, type: tokenizer, params: {steps: 40, batch: 16, channels: 16, codebook_size: 32, train_limit: 512, checkpoint_every: 10}}
  - {name: featurenet, type: featurenet, params: {steps: 30, batch: 32, train_limit: 512, checkpoint_every: 10}}
  - name: teacher
    type: teacher
    after: [tokenizer]
    resources: {workers: 2}
    params: {steps: 40, batch: 16, width: 16, heads: 2, train_limit: 512, tokenizer: tokenizer, checkpoint_every: 10, collective_timeout_s: 30}
  - {name: tune, type: tune, after: [teacher], params: {steps: 12, head_steps: 4, pool: 20, batch: 8, m: 2, head_width: 16, tokenizer: tokenizer, teacher: teacher, checkpoint_every: 4}}
  - name: distill
    type: distill
    after: [tune, featurenet]
    resources: {workers: 2}
    params: {steps: 1500, checkpoint_every: 50, k: 2, batch: 8, m: 2, init: tune, tokenizer: tokenizer, teacher: teacher, collective_timeout_s: 30}
    eval_every: {steps: 500, params: {samples: 50, batch: 50, tokenizer: tokenizer, teacher: teacher, featurenet: featurenet, stage1: tune}}
  - name: eval-teacher
    type: eval
    after: [teacher, featurenet]
    params: {sampler: teacher, samples: 50, batch: 50, marginal_samples: 50, euler_steps: 2, tokenizer: tokenizer, teacher: teacher, featurenet: featurenet}
  - name: eval-dd2
    type: eval
    after: [distill, featurenet]
    params: {sampler: dd2, samples: 50, batch: 50, marginal_samples: 50, euler_steps: 2, tokenizer: tokenizer, teacher: teacher, featurenet: featurenet, generator: distill, stage1: tune}
)";

std::string Now(Clock::time_point t0) {
  return absl::StrFormat("%7.2fs", std::chrono::duration<double>(Clock::now() - t0).count());
}

bool WaitFor(const std::function<bool()>& pred, int seconds) {
  const auto deadline = Clock::now() + std::chrono::seconds(seconds);
  while (Clock::now() < deadline) {
    if (pred()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return pred();
}

// "pid cmdline" of every dd2 daemon or job process (dd2-coordinator, dd2-worker, dd2-train)
// whose command line mentions `home`.
std::vector<std::string> Dd2ProcessesOf(const std::string& home) {
  std::vector<std::string> found;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/proc", ec)) {
    const std::string pid = e.path().filename().string();
    if (pid.find_first_not_of("0123456789") != std::string::npos) continue;
    std::ifstream in(e.path() / "cmdline");
    std::string cmdline((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const std::string program = std::filesystem::path(cmdline.substr(0, cmdline.find('\0'))).filename().string();
    if (program != "dd2-coordinator" && program != "dd2-worker" && program != "dd2-train") continue;
    std::replace(cmdline.begin(), cmdline.end(), '\0', ' ');
    if (cmdline.find(home) != std::string::npos) found.push_back(pid + " " + cmdline);
  }
  return found;
}

class Cluster {
 public:
  Cluster(const Options& o) : o_(o), fault_dir_(o.home + "/faults") {
    std::filesystem::create_directories(fault_dir_);
  }

  testing::CommandResult Ctl(std::vector<std::string> args) const {
    std::vector<std::string> argv = {o_.bin_dir + "/dd2ctl", "--home", o_.home};
    argv.insert(argv.end(), args.begin(), args.end());
    return testing::RunCommand(argv);
  }

  Json CtlJson(std::vector<std::string> args) const {
    args.push_back("--json");
    auto r = Ctl(args);
    return r.exit_code == 0 ? Json::parse(r.out, nullptr, false) : Json();
  }

  // Starts whatever is missing (dd2ctl up is idempotent), with the fault points enabled.
  bool Up(std::ostream& log) const {
    auto r = testing::RunCommand(
        {o_.bin_dir + "/dd2ctl", "--home", o_.home, "up", "--workers", std::to_string(kWorkers), "--heartbeat-ms",
         "200", "--lost-after-ms", "2000", "--retry-backoff-ms", "100", "--lost-retries", "50"},
        {"DD2_FAULT_DIR=" + fault_dir_, absl::StrCat("DD2_FAULT_PAUSE_MS=", o_.pause_ms)});
    if (r.exit_code != 0) log << "dd2ctl up failed: " << r.out << r.err << "\n";
    return r.exit_code == 0;
  }

  std::vector<std::string> Sql(const std::string& query) const {
    return testing::SqlRows(o_.home + "/coordinator.db", query);
  }

  int Pid(const std::string& file) const {
    auto text = ReadFile(o_.home + "/" + file);
    return text.ok() ? std::atoi(text->c_str()) : -1;
  }

  // local-N of a worker pid, or "".
  std::string WorkerOf(int pid) const {
    for (int i = 1; i <= kWorkers; ++i) {
      const std::string name = absl::StrCat("local-", i);
      if (Pid("workers/" + name + "/pid") == pid) return name;
    }
    return "";
  }

  const std::string& fault_dir() const { return fault_dir_; }

 private:
  const Options& o_;
  std::string fault_dir_;
};

// kill -9 and wait until the process is gone. False if it was not there to kill.
bool KillAndWait(int pid) {
  if (pid <= 0 || ::kill(pid, SIGKILL) != 0) return false;
  return WaitFor([&] { return ::kill(pid, 0) != 0; }, 10);
}

// Arms `moment` and waits for a process to reach it: returns "pid ppid detail", or "" when the
// moment did not come in time (the arm file is then removed).
std::string AwaitMoment(const Cluster& c, const std::string& moment, int timeout_s,
                        const std::function<bool()>& run_over) {
  const std::string arm = c.fault_dir() + "/arm-" + moment;
  std::set<std::string> seen;
  for (const auto& e : std::filesystem::directory_iterator(c.fault_dir())) seen.insert(e.path().string());
  std::ofstream(arm).flush();
  std::string hit;
  const auto deadline = Clock::now() + std::chrono::seconds(timeout_s);
  int polls = 0;
  while (Clock::now() < deadline) {
    for (const auto& e : std::filesystem::directory_iterator(c.fault_dir())) {
      const std::string p = e.path().string();
      if (seen.count(p) || e.path().filename().string().rfind("hit-" + moment + "-", 0) != 0) continue;
      auto text = ReadFile(p);
      if (text.ok() && !text->empty() && text->back() == '\n') return text->substr(0, text->size() - 1);
    }
    // The run may end with the moment still armed; look only every second (dd2ctl is a process).
    if (++polls % 20 == 0 && run_over()) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  std::filesystem::remove(arm);
  return "";
}

void Fire(const Cluster& c, Fault& f, std::mt19937_64& rng, Clock::time_point t0, int timeout_s,
          const std::function<bool()>& run_over) {
  int pid = -1;
  if (f.moment == "random") {
    std::this_thread::sleep_for(std::chrono::milliseconds(f.delay_ms));
    if (f.target == "coordinator") {
      pid = c.Pid("coordinator.pid");
      f.detail = absl::StrCat("at random, ", f.delay_ms, " ms after the previous fault");
    } else {  // a worker with work if there is one
      std::vector<std::string> busy, all;
      const Json w = c.CtlJson({"workers"});
      for (const auto& x : w.value("workers", Json::array())) {
        if (x.value("state", "") != "alive") continue;
        all.push_back(x.value("id", ""));
        if (!x.value("attempts", Json::array()).empty()) busy.push_back(x.value("id", ""));
      }
      const auto& pool = busy.empty() ? all : busy;
      if (pool.empty()) return;
      const std::string name = pool[rng() % pool.size()];
      pid = c.Pid("workers/" + name + "/pid");
      Json attempts = Json::array();
      for (const auto& x : w["workers"]) {
        if (x.value("id", "") == name) attempts = x.value("attempts", Json::array());
      }
      f.detail = absl::StrCat("at random, ", f.delay_ms, " ms after the previous fault; running ", attempts.dump());
    }
  } else {
    const std::string hit = AwaitMoment(c, f.moment, timeout_s, run_over);
    if (hit.empty()) return;
    std::vector<std::string> parts = absl::StrSplit(hit, absl::MaxSplits(' ', 2));
    if (parts.size() < 3) return;
    // A checkpoint is written by the job's child; its parent is the worker.
    pid = std::atoi((f.moment == "checkpoint_write" ? parts[1] : parts[0]).c_str());
    f.detail = absl::StrCat(f.moment, " ", parts[2]);
  }
  const std::string name = f.target == "coordinator" ? "coordinator" : "worker " + c.WorkerOf(pid);
  if (f.target == "worker" && c.WorkerOf(pid).empty()) {
    f.detail += absl::StrCat(" (pid ", pid, " is not a worker of this home)");
    return;
  }
  f.at_s = std::chrono::duration<double>(Clock::now() - t0).count();
  f.fired = KillAndWait(pid);
  f.victim = absl::StrCat(name, " (pid ", pid, ")");
}

// --- The checks: each appends what it found broken. ---

void CheckEachJobSucceededOnce(const Cluster& c, const std::string& run, std::vector<std::string>& failures) {
  for (const auto& row : c.Sql("SELECT j.id || ' ' || (SELECT COUNT(*) FROM events e WHERE e.kind = "
                               "'job_succeeded' AND e.job_id = j.id) FROM jobs j WHERE j.run_id = '" + run + "'")) {
    std::vector<std::string> p = absl::StrSplit(row, ' ');
    if (p.size() == 2 && p[1] != "1") failures.push_back(absl::StrCat(p[0], " succeeded ", p[1], " times (events)"));
  }
}

void CheckCommittedCheckpointsVerify(const Cluster& c, const std::string& run, std::ostream& log,
                                     std::vector<std::string>& failures) {
  const auto rows = c.Sql("SELECT path || ' ' || sha256 FROM checkpoints WHERE run_id = '" + run +
                          "' AND state = 'committed'");
  if (rows.empty()) failures.push_back("no committed checkpoint to verify");
  for (const auto& row : rows) {
    std::vector<std::string> p = absl::StrSplit(row, ' ');
    auto manifest = ReadManifest(p[0]);
    if (!manifest.ok()) {
      failures.push_back(absl::StrCat("committed checkpoint ", p[0], ": ", manifest.status().message()));
      continue;
    }
    if (manifest->sha256 != p[1]) failures.push_back(absl::StrCat(p[0], ": manifest sha256 differs from the record"));
    if (auto st = VerifyCheckpoint(*manifest); !st.ok()) failures.push_back(std::string(st.message()));
  }
  log << "  " << rows.size() << " committed checkpoints verified against their manifests\n";
}

void CheckMetricStepsWithinAttempts(const Cluster& c, const std::string& run, std::ostream& log,
                                    std::vector<std::string>& failures) {
  size_t checked = 0;
  for (const auto& row : c.Sql("SELECT a.id || ' ' || a.job_id || ' ' || a.started_ms || ' ' || a.finished_ms FROM "
                               "attempts a JOIN jobs j ON a.job_id = j.id WHERE j.run_id = '" + run + "'")) {
    std::vector<std::string> a = absl::StrSplit(row, ' ');
    std::map<std::string, int64_t> last;
    for (const auto& m : c.Sql("SELECT key || ' ' || step FROM metrics WHERE job_id = '" + a[1] + "' AND ts_ms >= " +
                               a[2] + " AND ts_ms <= " + a[3] + " ORDER BY ts_ms, step")) {
      std::vector<std::string> kv = absl::StrSplit(m, ' ');
      const int64_t step = std::stoll(kv[1]);
      auto it = last.find(kv[0]);
      if (it != last.end() && step < it->second) {
        failures.push_back(absl::StrCat(a[0], ": metric ", kv[0], " went from step ", it->second, " back to ", step));
      }
      last[kv[0]] = step;
      ++checked;
    }
  }
  log << "  " << checked << " metric rows checked for steps going backwards within their attempt\n";
}

void CheckViewsMatchSqlite(const Cluster& c, const std::string& run, std::ostream& log,
                           std::vector<std::string>& failures) {
  const Json jobs = c.CtlJson({"jobs", run});
  const Json status = c.CtlJson({"status", run});
  size_t compared = 0;
  for (const auto& j : jobs.value("jobs", Json::array())) {
    const std::string id = run + "/" + j.value("name", "");
    const std::string in_view =
        absl::StrCat(j.value("state", ""), " step ", j.value("step", int64_t{-1}), " attempts ", j.value("attempts", -1));
    const auto row = c.Sql("SELECT state || ' step ' || step || ' attempts ' || attempts FROM jobs WHERE id = '" + id + "'");
    if (row.size() != 1 || row[0] != in_view) {
      failures.push_back(absl::StrCat("dd2ctl jobs shows ", id, " as '", in_view, "', SQLite as '",
                                      row.empty() ? "" : row[0], "'"));
    }
    std::vector<std::string> view_attempts;
    for (const auto& a : j.value("attempts_detail", Json::array())) {
      view_attempts.push_back(a.value("id", "") + " " + a.value("state", ""));
    }
    if (view_attempts != c.Sql("SELECT id || ' ' || state FROM attempts WHERE job_id = '" + id + "' ORDER BY number")) {
      failures.push_back(absl::StrCat("dd2ctl jobs and SQLite list different attempts of ", id));
    }
    ++compared;
  }
  if (compared == 0) failures.push_back("dd2ctl jobs listed no jobs");
  std::vector<std::string> in_status;
  for (const auto& j : status["run"].value("jobs", Json::array())) {
    in_status.push_back(run + "/" + j.value("name", "") + " " + j.value("state", ""));
  }
  std::sort(in_status.begin(), in_status.end());
  if (in_status != c.Sql("SELECT id || ' ' || state FROM jobs WHERE run_id = '" + run + "' ORDER BY id")) {
    failures.push_back("dd2ctl status and SQLite disagree on the jobs' states");
  }
  std::vector<std::string> view_ckpts;
  for (const auto& k : c.CtlJson({"ckpt", "ls", run}).value("checkpoints", Json::array())) {
    view_ckpts.push_back(absl::StrCat(run, "/", k.value("job", ""), " ", k.value("step", int64_t{0}), " ",
                                      k.value("state", ""), " ", k.value("sha256", "")));
  }
  std::sort(view_ckpts.begin(), view_ckpts.end());
  auto sql_ckpts = c.Sql("SELECT job_id || ' ' || step || ' ' || state || ' ' || sha256 FROM checkpoints WHERE run_id = '" +
                         run + "' AND state != 'deleted'");
  std::sort(sql_ckpts.begin(), sql_ckpts.end());
  if (view_ckpts != sql_ckpts) {
    failures.push_back(absl::StrCat("dd2ctl ckpt ls shows ", view_ckpts.size(), " checkpoints, SQLite ",
                                    sql_ckpts.size()));
  }
  log << "  " << compared << " jobs and " << view_ckpts.size() << " checkpoints: dd2ctl's views match SQLite\n";
}

}  // namespace

int Report::fired() const {
  return static_cast<int>(std::count_if(faults.begin(), faults.end(), [](const Fault& f) { return f.fired; }));
}

std::vector<Fault> PlanFaults(uint64_t seed, int count) {
  std::mt19937_64 rng(seed);
  auto fault = [](std::string target, std::string moment, int64_t delay_ms) {
    Fault f;
    f.target = std::move(target);
    f.moment = std::move(moment);
    f.delay_ms = delay_ms;
    return f;
  };
  std::vector<Fault> plan;
  for (int i = 0; i < 2; ++i) plan.push_back(fault("worker", "attempt_end", 0));
  for (int i = 0; i < 2; ++i) plan.push_back(fault("coordinator", "finish_transition", 0));
  while (static_cast<int>(plan.size()) < count - 3) {
    const bool coordinator = rng() % 3 == 0;
    plan.push_back(fault(coordinator ? "coordinator" : "worker", "random", static_cast<int64_t>(500 + rng() % 4000)));
  }
  std::shuffle(plan.begin(), plan.end(), rng);
  // Checkpoint writes end with the distillation, while job ends recur (a killed end is redone):
  // the checkpoint faults go into the first half of the plan.
  for (int i = 0; i < 3; ++i) {
    const size_t at = rng() % (std::max<size_t>(plan.size() / 2, 1) + 1);
    plan.insert(plan.begin() + static_cast<std::ptrdiff_t>(at), fault("worker", "checkpoint_write", 0));
  }
  return plan;
}

Report Run(const Options& o, std::ostream& log) {
  Report report;
  report.faults = PlanFaults(o.seed, o.faults);
  std::mt19937_64 rng(o.seed ^ 0x9e3779b97f4a7c15ULL);
  Cluster c(o);
  auto fail = [&](const std::string& why) { report.failures.push_back(why); };
  log << "chaos: seed " << o.seed << ", " << report.faults.size() << " faults planned, home " << o.home << "\n";
  if (!c.Up(log)) {
    fail("the cluster did not start");
    return report;
  }
  const std::string yaml = o.home + "/chaos.yaml";
  std::ofstream(yaml) << kRunYaml;
  const Json submitted = c.CtlJson({"submit", yaml});
  report.run_id = submitted.value("run_id", "");
  const auto t0 = Clock::now();
  if (report.run_id.empty()) {
    fail("submit failed");
    c.Ctl({"down"});
    return report;
  }
  auto run_state = [&] { return c.CtlJson({"status", report.run_id})["run"].value("state", ""); };
  auto run_over = [&] {
    const std::string s = run_state();
    return s == "succeeded" || s == "failed" || s == "cancelled";
  };
  for (size_t i = 0; i < report.faults.size(); ++i) {
    Fault& f = report.faults[i];
    Fire(c, f, rng, t0, o.moment_timeout_s, run_over);
    log << Now(t0) << "  fault " << i + 1 << "/" << report.faults.size() << ": "
        << (f.fired ? "kill -9 " + f.victim : "NOT FIRED (" + f.target + ")") << " — " << f.moment
        << (f.detail.empty() ? "" : ": " + f.detail) << "\n"
        << std::flush;
    if (!c.Up(log)) fail(absl::StrCat("the cluster did not restart after fault ", i + 1));
  }
  const bool ended = WaitFor(run_over, o.run_timeout_s);
  const std::string state = run_state();
  log << Now(t0) << "  run " << report.run_id << " " << state << "\n";
  if (!ended || state != "succeeded") fail("run " + report.run_id + " ended " + (state.empty() ? "?" : state));
  if (report.fired() < static_cast<int>(report.faults.size())) {
    fail(absl::StrCat("only ", report.fired(), " of ", report.faults.size(), " planned faults fired"));
  }
  log << "checks:\n";
  CheckEachJobSucceededOnce(c, report.run_id, report.failures);
  CheckCommittedCheckpointsVerify(c, report.run_id, log, report.failures);
  CheckMetricStepsWithinAttempts(c, report.run_id, log, report.failures);
  CheckViewsMatchSqlite(c, report.run_id, log, report.failures);
  // Every job has ended, so no job process may remain; after down, nothing of this home.
  std::vector<std::string> left;
  auto no_job_processes = [&] {
    left.clear();
    for (const auto& p : Dd2ProcessesOf(o.home)) {
      if (p.find("dd2-train") != std::string::npos) left.push_back(p);
    }
    return left.empty();
  };
  if (!WaitFor(no_job_processes, 10)) {
    for (const auto& p : left) fail("job process left after its job ended: " + p);
  }
  c.Ctl({"down"});
  if (!WaitFor([&] { return (left = Dd2ProcessesOf(o.home)).empty(); }, 10)) {
    for (const auto& p : left) fail("process left after dd2ctl down: " + p);
  }
  log << "faults fired: " << report.fired() << " of " << report.faults.size() << "; "
      << (report.failures.empty() ? "nothing lost" : absl::StrCat(report.failures.size(), " failures")) << "\n";
  for (const auto& f : report.failures) log << "  FAIL: " << f << "\n";
  return report;
}

}  // namespace dd2::chaos
