#include "cluster/ctl.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <iostream>
#include <random>
#include <thread>

#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "cluster/ctl_output.h"
#include "cluster/import_command.h"
#include "cluster/local_cluster.h"
#include "cluster/report.h"
#include "cluster/slurm_commands.h"
#include "cluster/sweep_commands.h"
#include "common/client.h"
#include "common/curve_keys.h"
#include "common/home.h"
#include "common/run_spec.h"
#include "common/sweep.h"

namespace dd2 {
namespace {

// The dashboard's URL recorded in `home`, with the HTTP token when the coordinator is keyed.
absl::StatusOr<std::string> DashboardUrl(const std::string& home) {
  auto url = ReadHttpUrl(home);
  if (!url.ok()) return url.status();
  auto token = ReadFile(home + "/http-token");
  if (!token.ok()) return *url;
  return absl::StrCat(*url, "?token=", absl::StripAsciiWhitespace(*token));
}

using Json = nlohmann::json;

struct Common {
  std::string home;
  std::string endpoint;
  int timeout_ms = 2000;
  std::string key, coordinator_key;  // CURVE; default: the home's keys when it has them
};

absl::StatusOr<std::string> Endpoint(const Common& c) {
  if (!c.endpoint.empty()) return c.endpoint;
  return ReadEndpoint(ResolveHome(c.home));
}

void PrintRun(const Json& run) {
  std::printf("run %s (%s): %s, %lld/%lld jobs succeeded\n", run["id"].get<std::string>().c_str(),
              run["name"].get<std::string>().c_str(), run["state"].get<std::string>().c_str(),
              static_cast<long long>(run["jobs_succeeded"].get<int64_t>()),
              static_cast<long long>(run["jobs_total"].get<int64_t>()));
  std::vector<std::vector<std::string>> rows = {{"JOB", "TYPE", "STATE", "ATTEMPTS", "PROGRESS", "STEP", "METRICS"}};
  for (const auto& j : run["jobs"]) {
    std::string state = j["state"];
    const std::string source = j.value("reused_from", "");
    if (!source.empty()) {
      state += state == "succeeded" ? " (reused " + source + ")" : " (for " + source + ")";
    } else if (!j["failure"].get<std::string>().empty() && state != "succeeded") {
      state += " (" + j["failure"].get<std::string>() + ")";
    }
    rows.push_back({j["name"], j["type"], state, std::to_string(j["attempts"].get<int64_t>()),
                    Bar(JobFraction(j)),
                    absl::StrCat(j["step"].get<int64_t>(), "/", j["total"].get<int64_t>()),
                    MetricsText(j["metrics"])});
  }
  PrintTable(rows);
}

void PrintRuns(const Json& status) {
  const Json& c = status["coordinator"];
  std::printf("coordinator %s: up %llds, workers %lld alive / %lld suspect / %lld lost, %lld frames (%lld malformed, "
              "%lld refused), authentication %s (%lld handshakes refused)\n",
              c["endpoint"].get<std::string>().c_str(),
              static_cast<long long>(c["uptime_ms"].get<int64_t>() / 1000),
              static_cast<long long>(c["workers"].value("alive", 0)),
              static_cast<long long>(c["workers"].value("suspect", 0)),
              static_cast<long long>(c["workers"].value("lost", 0)),
              static_cast<long long>(c["frames"].get<int64_t>()),
              static_cast<long long>(c["malformed_frames"].get<int64_t>()),
              static_cast<long long>(c.value("rejected_frames", int64_t{0})),
              c.value("authentication", std::string("?")).c_str(),
              static_cast<long long>(c.value("rejected_connections", int64_t{0})));
  std::vector<std::vector<std::string>> rows = {{"RUN", "NAME", "STATE", "JOBS", "PROGRESS"}};
  for (const auto& r : status["runs"]) {
    rows.push_back({r["id"], r["name"], r["state"],
                    absl::StrCat(r["jobs_succeeded"].get<int64_t>(), "/", r["jobs_total"].get<int64_t>()),
                    Bar(r.value("progress", 0.0))});
  }
  if (rows.size() == 1) {
    std::printf("no runs yet; submit one with `dd2ctl submit examples/smoke.yaml`\n");
    return;
  }
  PrintTable(rows);
}

std::string RandomId() {
  std::random_device rd;
  return absl::StrFormat("%08x%08x", rd(), rd());
}

}  // namespace

int RunCtl(int argc, char** argv) {
  CLI::App app{"dd2ctl: submit and watch dd2 runs"};
  app.require_subcommand(1);
  // Global options are accepted after the subcommand too (`dd2ctl up --home DIR`); subcommands
  // made below inherit this.
  app.fallthrough();
  Common common;
  app.add_option("--home", common.home, "dd2 home (default $DD2_HOME or ./.dd2)");
  app.add_option("--endpoint", common.endpoint, "coordinator endpoint (default: recorded in the home)");
  app.add_option("--timeout-ms", common.timeout_ms, "per-request timeout")->capture_default_str();
  app.add_option("--key", common.key,
                 "CURVE key file for a keyed coordinator (default <home>/keys/dd2ctl.key when the home is keyed)");
  app.add_option("--coordinator-key", common.coordinator_key,
                 "the coordinator's public key file (default <home>/keys/coordinator.pub when the home is keyed)");

  UpOptions up;
  int lost_after_ms = 0, heartbeat_ms = 0, backoff_ms = -1, lost_retries = -1;
  auto* up_cmd = app.add_subcommand("up", "start a local coordinator and workers in the background");
  up_cmd->add_option("--workers", up.workers, "workers to start")->check(CLI::Range(0, 64))->capture_default_str();
  up_cmd->add_option("--slots", up.slots, "slots per worker")->check(CLI::Range(1, 64))->capture_default_str();
  up_cmd->add_option("--threads", up.threads, "intra-op CPU threads per job on each worker (0: inherit OMP_NUM_THREADS; a job's `threads` param wins; LibTorch jobs default to 1)")
      ->check(CLI::Range(0, 1024))
      ->capture_default_str();
  up_cmd->add_option("--heartbeat-ms", heartbeat_ms, "coordinator heartbeat interval");
  up_cmd->add_option("--lost-after-ms", lost_after_ms, "silence before a worker is lost");
  up_cmd->add_option("--retry-backoff-ms", backoff_ms, "first retry backoff");
  up_cmd->add_option("--lost-retries", lost_retries, "retries for attempts lost with their worker (default 3)")
      ->check(CLI::Range(0, 1000));
  std::string autoscale_file;
  up_cmd->add_option("--slurm-autoscale", autoscale_file,
                     "the coordinator submits SLURM allocations of workers when jobs wait (settings: a YAML file)")
      ->check(CLI::ExistingFile);

  up_cmd->add_flag("--curve", up.curve,
                   "keyed: create <home>/keys (coordinator, worker and admin keys) if missing and start with CURVE "
                   "(a home with keys always starts keyed)");
  auto* down_cmd = app.add_subcommand("down", "stop the local coordinator and workers");
  auto* shutdown_cmd = app.add_subcommand("shutdown", "ask the coordinator to exit (needs an admin key)");
  std::string keygen_out, keygen_role = "client", keygen_name;
  auto* keygen_cmd = app.add_subcommand("keygen", "write a CURVE key pair: NAME.key (secret, 0600) and NAME.pub");
  keygen_cmd->add_option("--out", keygen_out, "folder to write into")->required();
  keygen_cmd->add_option("--role", keygen_role, "what the key may do")
      ->check(CLI::IsMember({"worker", "client", "admin", "coordinator"}))
      ->capture_default_str();
  keygen_cmd->add_option("--name", keygen_name, "file name without extension (default: the role)");
  auto* endpoint_cmd = app.add_subcommand("endpoint", "print the coordinator endpoint");

  std::string file, id;
  bool wait = false, json = false, watch = false, follow = false, brief = false;
  keygen_cmd->add_flag("--json", json, "JSON output");
  auto* submit_cmd = app.add_subcommand("submit", "submit a run.yaml");
  submit_cmd->add_option("file", file, "run.yaml")->required();
  submit_cmd->add_option("--id", id, "submission id: the same id always returns the same run");
  submit_cmd->add_flag("--wait", wait, "wait for the run to finish; exit 1 unless it succeeded");
  submit_cmd->add_flag("--json", json, "print the reply as JSON");
  bool no_reuse = false;
  submit_cmd->add_flag("--no-reuse", no_reuse, "run every job, even where an identical job already succeeded");

  LlamaGenImport import;
  auto* import_cmd = app.add_subcommand("import", "import a trained teacher from its published files");
  import_cmd->require_subcommand(1);
  auto* import_llamagen_cmd = import_cmd->add_subcommand(
      "llamagen", "submit a run that reads LlamaGen's VQ and c2i GPT .pt files into a tokenizer and a teacher "
                  "(jobs tokenizer, teacher-import; a `pipeline: dd2` run with teacher.import of the same files reuses them)");
  import_llamagen_cmd->add_option("--gpt", import.gpt, "the GPT's .pt file (a path on the workers)")->required();
  import_llamagen_cmd->add_option("--vq", import.vq, "the VQ tokenizer's .pt file (a path on the workers)")->required();
  import_llamagen_cmd->add_option("--preset", import.preset, "B, L, XL, XXL or XXXL (gives heads and 256 tokens)");
  import_llamagen_cmd->add_option("--heads", import.heads, "attention heads, without a preset");
  import_llamagen_cmd->add_option("--tokens", import.tokens, "tokens per image (a square; default the preset's 256)");
  import_llamagen_cmd->add_option("--eval", import.eval_samples, "then evaluate the teacher with N samples (0: no eval)");
  import_llamagen_cmd->add_option("--name", import.name, "the run's name")->capture_default_str();
  import_llamagen_cmd->add_option("--id", id, "submission id: the same id always returns the same run");
  import_llamagen_cmd->add_flag("--wait", wait, "wait for the run to finish; exit 1 unless it succeeded");
  import_llamagen_cmd->add_flag("--json", json, "print the reply as JSON");

  std::string target;
  auto* status_cmd = app.add_subcommand("status", "runs, or one run's jobs");
  status_cmd->add_option("run", target, "run id");
  status_cmd->add_flag("--json", json, "JSON output");
  status_cmd->add_flag("--brief", brief, "without a run: each run's counts and progress, not its jobs");
  status_cmd->add_flag("--watch", watch, "refresh every second");

  auto* jobs_cmd = app.add_subcommand("jobs", "a run's jobs with every attempt and failure cause");
  jobs_cmd->add_option("run", target, "run id")->required();
  jobs_cmd->add_flag("--json", json, "JSON output");

  auto* results_cmd = app.add_subcommand("results", "a run's eval jobs side by side, with sample grids");
  results_cmd->add_option("run", target, "run id")->required();
  results_cmd->add_flag("--json", json, "JSON output");

  auto* logs_cmd = app.add_subcommand("logs", "the log of a job's latest attempt");
  logs_cmd->add_option("job", target, "job id (<run>/<job>)")->required();
  logs_cmd->add_flag("-f,--follow", follow, "keep printing until the job ends");

  auto* cancel_cmd = app.add_subcommand("cancel", "cancel a run or one job");
  cancel_cmd->add_option("target", target, "run id or job id")->required();
  cancel_cmd->add_flag("--json", json, "JSON output");

  auto* ckpt_cmd = app.add_subcommand("ckpt", "checkpoints");
  auto* ckpt_ls_cmd = ckpt_cmd->add_subcommand("ls", "a run's checkpoints: committed, deleting and deleted");
  ckpt_cmd->require_subcommand(1);
  std::string ckpt_run;
  ckpt_ls_cmd->add_option("run", ckpt_run, "run id")->required();
  ckpt_ls_cmd->add_flag("--json", json, "JSON output");
  auto* sweep_cmd = app.add_subcommand("sweep", "sweeps: a run.yaml with a `sweep:` block, one run per point");
  sweep_cmd->require_subcommand(1);
  std::string sweep_id;
  auto* sweep_ls_cmd = sweep_cmd->add_subcommand("ls", "every sweep");
  sweep_ls_cmd->add_flag("--json", json, "JSON output");
  auto* sweep_status_cmd = sweep_cmd->add_subcommand("status", "one row per point, the best marked, mean ± std over seeds");
  sweep_status_cmd->add_option("sweep", sweep_id, "sweep id")->required();
  sweep_status_cmd->add_flag("--json", json, "JSON output");
  sweep_status_cmd->add_flag("--watch", watch, "refresh every second until the sweep ends");
  auto* sweep_cancel_cmd = sweep_cmd->add_subcommand("cancel", "cancel every point of a sweep");
  sweep_cancel_cmd->add_option("sweep", sweep_id, "sweep id")->required();
  sweep_cancel_cmd->add_flag("--json", json, "JSON output");
  auto* sweep_extend_cmd = sweep_cmd->add_subcommand("extend", "add the points of FILE that the sweep does not have yet");
  sweep_extend_cmd->add_option("sweep", sweep_id, "sweep id")->required();
  sweep_extend_cmd->add_option("file", file, "run.yaml with a `sweep:` block")->required();
  sweep_extend_cmd->add_flag("--json", json, "JSON output");
  sweep_extend_cmd->add_flag("--wait", wait, "wait for every point to end");

  std::vector<std::string> compare_runs;
  auto* compare_cmd = app.add_subcommand("compare", "runs side by side: params that differ, and every metric");
  compare_cmd->add_option("runs", compare_runs, "run ids")->required();
  compare_cmd->add_flag("--json", json, "JSON output");

  std::string report_out;
  auto* report_cmd = app.add_subcommand("report", "PNG plots and report.md for a sweep or a run");
  report_cmd->add_option("target", target, "sweep id or run id")->required();
  report_cmd->add_option("--out", report_out, "folder to write into")->required();
  report_cmd->add_flag("--json", json, "JSON output");

  auto* dashboard_cmd = app.add_subcommand("dashboard", "print the URL of the coordinator's dashboard (and /metrics, /api/v1)");
  dashboard_cmd->add_flag("--json", json, "JSON output");
  auto* workers_cmd = app.add_subcommand("workers", "registered workers");
  workers_cmd->add_flag("--json", json, "JSON output");

  auto* slurm_cmd = app.add_subcommand("slurm", "workers started by SLURM: launch, ls, cancel");
  slurm_cmd->require_subcommand(1);
  SlurmLaunchSpec launch;
  bool dry_run = false;
  auto* slurm_launch_cmd =
      slurm_cmd->add_subcommand("launch", "submit an sbatch script that starts one dd2-worker per GPU");
  slurm_launch_cmd->add_option("--nodes", launch.nodes, "nodes")->check(CLI::Range(1, 4096))->capture_default_str();
  slurm_launch_cmd->add_option("--gpus-per-node", launch.workers_per_node, "GPUs per node: one worker each")
      ->check(CLI::Range(1, 64))
      ->capture_default_str();
  slurm_launch_cmd->add_option("--device", launch.device, "cuda, or cpu for clusters or tests without GPUs")
      ->check(CLI::IsMember({"cuda", "cpu"}))
      ->capture_default_str();
  slurm_launch_cmd->add_option("--partition", launch.partition, "SLURM partition (default: the cluster's)");
  slurm_launch_cmd->add_option("--time", launch.time_limit, "time limit, e.g. 4:00:00 (default: the partition's)");
  slurm_launch_cmd->add_option("--account", launch.account, "SLURM account");
  slurm_launch_cmd->add_option("--sbatch-arg", launch.sbatch_args, "another sbatch option, e.g. --qos=high (repeatable)");
  slurm_launch_cmd->add_option("--grace-s", launch.grace_s, "USR1 this long before the time limit: checkpoint and hand back")
      ->capture_default_str();
  slurm_launch_cmd->add_option("--threads", launch.threads, "intra-op CPU threads per job (0: inherit; a job's `threads` param wins; LibTorch jobs default to 1)")
      ->capture_default_str();
  slurm_launch_cmd->add_option("--idle-exit-s", launch.idle_exit_s, "workers idle this long exit (0: never)")
      ->capture_default_str();
  slurm_launch_cmd->add_option("--storage", launch.home,
                               "shared storage root the workers use as their dd2 home (default: --home)");
  slurm_launch_cmd->add_option("--worker", launch.worker_binary, "dd2-worker on the nodes (default: beside dd2ctl)");
  slurm_launch_cmd->add_flag("--dry-run", dry_run, "print the sbatch script and submit nothing");
  slurm_launch_cmd->add_flag("--json", json, "JSON output");
  auto* slurm_ls_cmd = slurm_cmd->add_subcommand("ls", "allocations with SLURM's state and their workers");
  slurm_ls_cmd->add_flag("--json", json, "JSON output");
  auto* slurm_cancel_cmd = slurm_cmd->add_subcommand("cancel", "scancel an allocation (its jobs are rescheduled)");
  slurm_cancel_cmd->add_option("allocation", target, "allocation id (alloc-N) or SLURM job id")->required();
  slurm_cancel_cmd->add_flag("--json", json, "JSON output");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    int code = app.exit(e);
    return code == 0 ? 0 : kExitInvalid;
  }

  const std::string home = ResolveHome(common.home);
  if (up_cmd->parsed()) {
    up.home = home;
    if (heartbeat_ms > 0) up.coordinator_args.push_back(absl::StrCat("--heartbeat-interval-ms=", heartbeat_ms));
    if (lost_after_ms > 0) up.coordinator_args.push_back(absl::StrCat("--lost-after-ms=", lost_after_ms));
    if (backoff_ms >= 0) up.coordinator_args.push_back(absl::StrCat("--retry-backoff-ms=", backoff_ms));
    if (lost_retries >= 0) up.coordinator_args.push_back(absl::StrCat("--lost-retries=", lost_retries));
    if (!autoscale_file.empty()) {
      up.coordinator_args.push_back(
          absl::StrCat("--slurm-autoscale=", std::filesystem::absolute(autoscale_file).string()));
    }
    absl::Status st = Up(up);
    if (!st.ok()) return Fail(st);
    auto ep = ReadEndpoint(home);
    std::printf("dd2 is up: coordinator %s, %d workers, home %s\n", ep.ok() ? ep->c_str() : "?", up.workers, home.c_str());
    if (auto url = DashboardUrl(home); url.ok()) std::printf("dashboard: %s\n", url->c_str());
    return kExitOk;
  }
  if (dashboard_cmd->parsed()) {
    auto url = DashboardUrl(home);
    if (!url.ok()) return Fail(url.status());
    if (json) {
      std::printf("%s\n", Json{{"url", *url}}.dump().c_str());
    } else {
      std::printf("%s\n", url->c_str());
    }
    return kExitOk;
  }
  if (down_cmd->parsed()) {
    absl::Status st = Down(home);
    if (!st.ok()) return Fail(st);
    std::printf("dd2 is down (home %s)\n", home.c_str());
    return kExitOk;
  }
  if (keygen_cmd->parsed()) {
    auto pair = GenerateKeyPair(*ParseRole(keygen_role));
    if (!pair.ok()) return Fail(pair.status());
    const std::string name = keygen_name.empty() ? keygen_role : keygen_name;
    if (absl::Status st = WriteKeyFiles(keygen_out, name, *pair); !st.ok()) return Fail(st);
    const std::string base = absl::StrCat(keygen_out, "/", name);
    if (json) {
      std::printf("%s\n", Json{{"role", keygen_role}, {"public_key", pair->public_key}, {"key_file", base + ".key"},
                               {"pub_file", base + ".pub"}}.dump().c_str());
    } else {
      std::printf("wrote %s.key (secret, mode 0600) and %s.pub (role %s)\n", base.c_str(), base.c_str(),
                  keygen_role.c_str());
      if (keygen_role == "coordinator") {
        std::printf("start the coordinator with --curve-secret %s.key; give %s.pub to every worker and client\n",
                    base.c_str(), base.c_str());
      } else {
        std::printf("authorize it: copy %s.pub into the coordinator's --authorized-keys folder\n", base.c_str());
      }
    }
    return kExitOk;
  }
  // Validate before touching the coordinator: bad input never reaches the database.
  Submission submission;
  if (submit_cmd->parsed() || sweep_extend_cmd->parsed()) {
    auto loaded = LoadSubmission(file);
    if (!loaded.ok()) {
      std::fprintf(stderr, "%s\n", std::string(loaded.status().message()).c_str());
      return kExitInvalid;
    }
    submission = *std::move(loaded);
    if (sweep_extend_cmd->parsed() && !submission.sweep) {
      std::fprintf(stderr, "%s:1:1: sweep: the file has no `sweep:` block to extend the sweep with\n", file.c_str());
      return kExitInvalid;
    }
  }
  if (import_llamagen_cmd->parsed()) {
    auto run = LlamaGenImportRun(import);
    if (!run.ok()) {
      std::fprintf(stderr, "%s\n", std::string(run.status().message()).c_str());
      return kExitInvalid;
    }
    submission.run = *std::move(run);
  }
  auto endpoint = Endpoint(common);
  if (!endpoint.ok()) return Fail(endpoint.status());
  const KeyedHomePaths keyed = KeyedHome(home);
  auto keys = ClientKeys(common.key, common.coordinator_key, keyed.ctl_key, keyed.coordinator_pub);
  if (!keys.ok()) return Fail(keys.status());
  CoordinatorClient client(*endpoint, common.timeout_ms, 3, *keys);
  if (shutdown_cmd->parsed()) {
    proto::Envelope req;
    req.mutable_shutdown();
    auto reply = client.Call(req);
    if (!reply.ok()) return Fail(reply.status());
    std::printf("coordinator at %s is stopping\n", endpoint->c_str());
    return kExitOk;
  }

  if (endpoint_cmd->parsed()) {
    std::printf("%s\n", endpoint->c_str());
    return kExitOk;
  }
  if (slurm_cmd->parsed()) {
    auto slurm = NewShellSlurmCommands();
    if (slurm_launch_cmd->parsed()) return SlurmLaunch(&client, *endpoint, home, launch, dry_run, json, *slurm);
    if (slurm_ls_cmd->parsed()) return SlurmList(client, json);
    return SlurmCancel(client, target, json, *slurm);
  }
  if (submit_cmd->parsed() && submission.sweep) {
    return SubmitSweep(client, *submission.sweep, id.empty() ? RandomId() : id, "", no_reuse, json, wait);
  }
  if (sweep_extend_cmd->parsed()) return SubmitSweep(client, *submission.sweep, "", sweep_id, false, json, wait);
  if (sweep_ls_cmd->parsed()) return SweepList(client, json);
  if (sweep_status_cmd->parsed()) return SweepStatus(client, sweep_id, json, watch);
  if (sweep_cancel_cmd->parsed()) return Cancel(client, sweep_id, json);
  if (compare_cmd->parsed()) return Compare(client, compare_runs, json);
  if (report_cmd->parsed()) return Report(client, target, report_out, json);
  if (submit_cmd->parsed() || import_llamagen_cmd->parsed()) {
    proto::Envelope req;
    *req.mutable_submit()->mutable_spec() = *submission.run;
    req.mutable_submit()->mutable_spec()->set_no_reuse(no_reuse);
    req.mutable_submit()->set_submission_id(id.empty() ? RandomId() : id);
    auto reply = client.Call(req);
    if (!reply.ok()) return Fail(reply.status());
    const std::string run_id = reply->submit_reply().run_id();
    const bool existed = reply->submit_reply().existed();
    if (json && !wait) {
      std::printf("%s\n", Json{{"run_id", run_id}, {"existed", existed}, {"submission_id", req.submit().submission_id()}}.dump().c_str());
      return kExitOk;
    }
    if (!json) std::printf("%s run %s\n", existed ? "already submitted as" : "submitted", run_id.c_str());
    if (!wait) return kExitOk;
    const bool tty = ::isatty(1);
    while (true) {
      proto::Envelope sreq;
      sreq.mutable_status()->set_run_id(run_id);
      auto st = CallJson(client, sreq);
      if (!st.ok()) return Fail(st.status());
      const Json& run = (*st)["run"];
      if (tty && !json) {
        std::printf("\033[H\033[2J");
        PrintRun(run);
      }
      if (Terminal(run["state"])) {
        if (json) {
          std::printf("%s\n", st->dump().c_str());
        } else if (!tty) {
          PrintRun(run);
        }
        return run["state"] == "succeeded" ? kExitOk : kExitFailed;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(tty ? 1000 : 300));
    }
  }
  if (status_cmd->parsed()) {
    while (true) {
      proto::Envelope req;
      req.mutable_status()->set_run_id(target);
      req.mutable_status()->set_brief(brief || !json);  // the text table shows no jobs
      auto st = CallJson(client, req);
      if (!st.ok()) return Fail(st.status());
      if (watch) std::printf("\033[H\033[2J");
      if (json) {
        std::printf("%s\n", st->dump().c_str());
      } else if (target.empty()) {
        PrintRuns(*st);
      } else {
        PrintRun((*st)["run"]);
      }
      std::fflush(stdout);
      if (!watch || (!target.empty() && Terminal((*st)["run"]["state"]))) return kExitOk;
      std::this_thread::sleep_for(std::chrono::seconds(1));
    }
  }
  if (jobs_cmd->parsed()) {
    proto::Envelope req;
    req.mutable_jobs()->set_run_id(target);
    auto st = CallJson(client, req);
    if (!st.ok()) return Fail(st.status());
    if (json) {
      std::printf("%s\n", st->dump().c_str());
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {{"JOB", "STATE", "ATTEMPT", "ATTEMPT STATE", "WORKERS", "EXIT", "CAUSE"}};
    for (const auto& j : (*st)["jobs"]) {
      const std::string source = j.value("reused_from", "");
      if (!source.empty() && j["attempts_detail"].empty()) {
        rows.push_back({j["id"], j["state"], "-", "-", "-", "-",
                        j["state"] == "succeeded" ? "reused the outputs of " + source : "waits for identical " + source});
      } else if (j["attempts_detail"].empty()) {
        rows.push_back({j["id"], j["state"], "-", "-", "-", "-", j["failure"]});
      }
      for (const auto& a : j["attempts_detail"]) {
        std::string workers;
        for (const auto& w : a["workers"]) absl::StrAppend(&workers, workers.empty() ? "" : ",", w.get<std::string>());
        std::string exit = a["signal"].get<int64_t>() != 0 ? absl::StrCat("sig ", a["signal"].get<int64_t>())
                                                          : std::to_string(a["exit_code"].get<int64_t>());
        rows.push_back({j["id"], j["state"], std::to_string(a["number"].get<int64_t>()), a["state"], workers,
                        Terminal(a["state"]) || a["state"] == "lost" ? exit : "-", a["cause"]});
      }
    }
    PrintTable(rows);
    return kExitOk;
  }
  if (results_cmd->parsed()) {
    proto::Envelope req;
    req.mutable_status()->set_run_id(target);
    auto st = CallJson(client, req);
    if (!st.ok()) return Fail(st.status());
    static const std::vector<std::pair<std::string, std::string>> kColumns = {
        {"fid", "FID"}, {"inception_score", "IS"}, {"precision", "PREC"}, {"recall", "RECALL"},
        {"class_accuracy", "CLASS-ACC"}, {"latency_ms_b1", "MS/IMG@1"}, {"latency_ms_b256", "MS/IMG@256"},
        {"speedup_vs_teacher_b1", "SPEEDUP@1"}, {"teacher_nll", "TEACHER-NLL"}};
    Json out = Json::array();
    std::vector<std::vector<std::string>> rows = {{"EVAL", "STATE"}};
    for (const auto& c : kColumns) rows[0].push_back(c.second);
    rows[0].push_back("GRID");
    for (const auto& j : (*st)["run"]["jobs"]) {
      if (j["type"] != "eval") continue;
      const std::string grid = absl::StrCat(home, "/artifacts/", target, "/", j["name"].get<std::string>(), "/samples.png");
      std::vector<std::string> row = {j["name"], j["state"]};
      for (const auto& c : kColumns) {
        row.push_back(j["metrics"].contains(c.first) ? absl::StrFormat("%.4g", j["metrics"][c.first].get<double>()) : "-");
      }
      row.push_back(j["state"] == "succeeded" ? grid : "-");
      rows.push_back(row);
      out.push_back({{"job", j["name"]}, {"state", j["state"]}, {"metrics", j["metrics"]}, {"grid", grid}});
    }
    if (json) {
      std::printf("%s\n", Json{{"run_id", target}, {"evals", out}}.dump().c_str());
    } else if (rows.size() == 1) {
      std::printf("run %s has no eval jobs\n", target.c_str());
    } else {
      PrintTable(rows);
    }
    return kExitOk;
  }
  if (logs_cmd->parsed()) {
    uint64_t offset = 0;
    while (true) {
      proto::Envelope req;
      req.mutable_logs()->set_job_id(target);
      req.mutable_logs()->set_offset(offset);
      auto reply = client.Call(req);
      if (!reply.ok()) return Fail(reply.status());
      const auto& r = reply->logs_reply();
      std::fwrite(r.data().data(), 1, r.data().size(), stdout);
      std::fflush(stdout);
      offset = r.next_offset();
      if (!follow || (r.finished() && r.data().empty())) return kExitOk;
      if (r.data().empty()) std::this_thread::sleep_for(std::chrono::milliseconds(300));
    }
  }
  if (cancel_cmd->parsed()) return Cancel(client, target, json);
  if (ckpt_ls_cmd->parsed()) {
    proto::Envelope req;
    req.mutable_checkpoints()->set_run_id(ckpt_run);
    auto st = CallJson(client, req);
    if (!st.ok()) return Fail(st.status());
    if (json) {
      std::printf("%s\n", st->dump().c_str());
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {{"JOB", "STEP", "STATE", "SIZE", "SHA256", "METRICS", "PATH"}};
    for (const auto& c : (*st)["checkpoints"]) {
      rows.push_back({c["job"], std::to_string(c["step"].get<int64_t>()), c["state"],
                      absl::StrFormat("%.1f MB", c["bytes"].get<int64_t>() / 1e6), c["sha256"].get<std::string>().substr(0, 12),
                      MetricsText(c["metrics"]), c["path"]});
    }
    PrintTable(rows);
    return kExitOk;
  }
  if (workers_cmd->parsed()) {
    proto::Envelope req;
    req.mutable_workers();
    auto st = CallJson(client, req);
    if (!st.ok()) return Fail(st.status());
    if (json) {
      std::printf("%s\n", st->dump().c_str());
      return kExitOk;
    }
    std::vector<std::vector<std::string>> rows = {
        {"WORKER", "HOST", "DEVICE", "STATE", "SLOTS", "SILENT", "SLURM JOB/RANK/LOCAL/RESTART@NODE", "ATTEMPTS"}};
    for (const auto& w : (*st)["workers"]) {
      std::string attempts;
      for (const auto& a : w["attempts"]) absl::StrAppend(&attempts, attempts.empty() ? "" : ",", a.get<std::string>());
      const Json& sl = w["slurm"];
      const std::string slurm =
          sl.is_null() ? "-"
                       : absl::StrCat(sl["job_id"].get<std::string>(), "/", sl["procid"].get<int64_t>(), "/",
                                      sl["localid"].get<int64_t>(), "/", sl["restart_count"].get<int64_t>(), "@",
                                      sl["node"].get<std::string>());
      rows.push_back({w["id"], w["host"], absl::StrCat(w["device"].get<std::string>(), ":", w["device_index"].get<int64_t>()),
                      w["state"], absl::StrCat(w["used"].get<int64_t>(), "/", w["slots"].get<int64_t>()),
                      w["silent_ms"].get<int64_t>() < 0 ? "-" : absl::StrCat(w["silent_ms"].get<int64_t>(), "ms"),
                      slurm, attempts});
    }
    PrintTable(rows);
    return kExitOk;
  }
  return kExitInvalid;
}

}  // namespace dd2
