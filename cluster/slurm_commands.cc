#include "cluster/slurm_commands.h"

#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <thread>

#include <nlohmann/json.hpp>

#include "absl/strings/str_cat.h"
#include "cluster/ctl_output.h"

namespace dd2 {
namespace {

using Json = nlohmann::json;

std::string BesideSelf(const std::string& name) {
  std::error_code ec;
  auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? name : (self.parent_path() / name).string();
}

// Failures of SLURM's own commands: the command's name and SLURM's words, exit 1.
int SlurmFail(const std::string& what, const absl::Status& st) {
  std::fprintf(stderr, "dd2ctl: %s: %s\n", what.c_str(), std::string(st.message()).c_str());
  return kExitFailed;
}

}  // namespace

int SlurmLaunch(CoordinatorClient* client, const std::string& endpoint, const std::string& home, SlurmLaunchSpec spec,
                bool dry_run, bool json, SlurmCommands& slurm) {
  spec.coordinator = endpoint;
  if (spec.home.empty()) spec.home = home;
  spec.home = std::filesystem::absolute(spec.home).lexically_normal().string();
  if (spec.home.size() > 1 && spec.home.back() == '/') spec.home.pop_back();
  if (spec.worker_binary.empty()) spec.worker_binary = BesideSelf("dd2-worker");
  absl::Status valid = ValidateLaunchSpec(spec);
  if (!valid.ok()) {
    std::fprintf(stderr, "dd2ctl slurm launch: %s\n", std::string(valid.message()).c_str());
    return kExitInvalid;
  }
  const std::string script = RenderSbatchScript(spec);
  if (dry_run) {
    std::fputs(script.c_str(), stdout);
    return kExitOk;
  }
  // Ask the coordinator first: an allocation it cannot record would run workers nobody tracks.
  proto::Envelope ping;
  ping.mutable_slurm_list();
  if (auto st = CallJson(*client, ping); !st.ok()) return Fail(st.status());
  std::error_code ec;
  std::filesystem::create_directories(spec.home + "/slurm", ec);  // sbatch --output goes here
  if (ec) {
    std::fprintf(stderr, "dd2ctl slurm launch: cannot create %s/slurm: %s\n", spec.home.c_str(), ec.message().c_str());
    return kExitFailed;
  }
  auto job = SubmitWithRetry(
      slurm, script, 5, 2000, [](int64_t ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); },
      [](const std::string& why) { std::fprintf(stderr, "dd2ctl slurm launch: %s\n", why.c_str()); });
  if (!job.ok()) return SlurmFail("sbatch failed", job.status());
  proto::Envelope req;
  auto* a = req.mutable_slurm_record()->mutable_allocation();
  a->set_origin("launch");
  a->set_slurm_job_id(*job);
  a->set_nodes(static_cast<uint32_t>(spec.nodes));
  a->set_workers_per_node(static_cast<uint32_t>(spec.workers_per_node));
  a->set_device(spec.device);
  a->set_partition(spec.partition);
  a->set_time_limit(spec.time_limit);
  a->set_account(spec.account);
  a->set_script(script);
  auto reply = client->Call(req);
  if (!reply.ok()) {
    std::fprintf(stderr, "dd2ctl slurm launch: SLURM job %s was submitted but the coordinator did not record it: %s\n",
                 job->c_str(), std::string(reply.status().message()).c_str());
    return ExitCodeFor(reply.status());
  }
  const std::string id = reply->slurm_record_reply().id();
  if (json) {
    std::printf("%s\n", Json{{"id", id}, {"slurm_job_id", *job}, {"nodes", spec.nodes},
                             {"workers_per_node", spec.workers_per_node}, {"device", spec.device}}
                            .dump()
                            .c_str());
  } else {
    std::printf("submitted SLURM job %s as %s: %d node(s) x %d %s worker(s); `dd2ctl slurm ls` follows it\n",
                job->c_str(), id.c_str(), spec.nodes, spec.workers_per_node, spec.device.c_str());
  }
  return kExitOk;
}

int SlurmList(CoordinatorClient& client, bool json) {
  proto::Envelope req;
  req.mutable_slurm_list();
  auto doc = CallJson(client, req);
  if (!doc.ok()) return Fail(doc.status());
  if (json) {
    std::printf("%s\n", doc->dump().c_str());
    return kExitOk;
  }
  const Json& d = *doc;
  if (d["allocations"].empty()) {
    std::printf("no SLURM allocations; start workers with `dd2ctl slurm launch --nodes 1 --gpus-per-node 4`\n");
  } else {
    std::vector<std::vector<std::string>> rows = {
        {"ALLOC", "SLURM JOB", "ORIGIN", "ASKED", "STATE", "RESTARTS", "WORKERS", "PARTITION", "TIME"}};
    for (const auto& a : d["allocations"]) {
      std::string state = a["state"];
      const std::string reason = a["reason"];
      if (!reason.empty() && reason != "None") state += " (" + reason + ")";
      int64_t alive = 0;
      for (const auto& w : a["workers"]) alive += w["state"] == "alive" ? 1 : 0;
      rows.push_back({a["id"], a["slurm_job_id"].get<std::string>().empty() ? "-" : a["slurm_job_id"].get<std::string>(),
                      a["origin"],
                      absl::StrCat(a["nodes"].get<int64_t>(), "x", a["workers_per_node"].get<int64_t>(), " ",
                                   a["device"].get<std::string>()),
                      state, std::to_string(a["restarts"].get<int64_t>()),
                      absl::StrCat(alive, " alive / ", a["workers"].size(), " registered"),
                      a["partition"].get<std::string>().empty() ? "(default)" : a["partition"].get<std::string>(),
                      a["time_limit"].get<std::string>().empty() ? "-" : a["time_limit"].get<std::string>()});
    }
    PrintTable(rows);
  }
  const Json& as = d["autoscale"];
  if (as["enabled"].get<bool>()) {
    std::printf("autoscale: on; %s\n", as["last_decision"].get<std::string>().empty()
                                           ? "nothing waiting"
                                           : as["last_decision"].get<std::string>().c_str());
    if (as["sbatch_failures"].get<int64_t>() > 0) {
      std::printf("autoscale: %lld sbatch failure(s) in a row; see the latest allocation's state\n",
                  static_cast<long long>(as["sbatch_failures"].get<int64_t>()));
    }
  }
  if (!d["poll_error"].get<std::string>().empty()) {
    std::printf("SLURM states may be stale: %s\n", d["poll_error"].get<std::string>().c_str());
  }
  return kExitOk;
}

int SlurmCancel(CoordinatorClient& client, const std::string& target, bool json, SlurmCommands& slurm) {
  proto::Envelope req;
  req.mutable_slurm_list();
  auto doc = CallJson(client, req);
  if (!doc.ok()) return Fail(doc.status());
  for (const auto& a : (*doc)["allocations"]) {
    if (a["id"] != target && a["slurm_job_id"] != target) continue;
    const std::string job = a["slurm_job_id"];
    if (job.empty()) {
      std::fprintf(stderr, "dd2ctl slurm cancel: %s has no SLURM job (state %s)\n", target.c_str(),
                   a["state"].get<std::string>().c_str());
      return kExitFailed;
    }
    absl::Status st = slurm.Cancel(job);
    if (!st.ok()) return SlurmFail("scancel failed", st);
    if (json) {
      std::printf("%s\n", Json{{"id", a["id"]}, {"slurm_job_id", job}, {"cancelled", true}}.dump().c_str());
    } else {
      std::printf("scancelled SLURM job %s (%s); its workers checkpoint and hand their jobs back\n", job.c_str(),
                  a["id"].get<std::string>().c_str());
    }
    return kExitOk;
  }
  std::fprintf(stderr, "dd2ctl slurm cancel: no allocation '%s' (see `dd2ctl slurm ls`)\n", target.c_str());
  return kExitNotFound;
}

}  // namespace dd2
