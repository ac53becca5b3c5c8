#include "coordinator/autoscale.h"

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "common/status_macros.h"
#include "common/yaml_checker.h"

namespace dd2 {

absl::StatusOr<AutoscaleConfig> LoadAutoscaleConfig(const std::string& path) {
  YamlChecker c(path);
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::BadFile&) {
    return absl::InvalidArgumentError(absl::StrCat(path, ": cannot read the file"));
  } catch (const YAML::Exception& e) {
    return c.Error(e.mark, "", e.msg);
  }
  DD2_RETURN_IF_ERROR(c.Keys(root, "",
                             {"partition", "gpus_per_node", "device", "time_limit", "account", "sbatch_args",
                              "max_allocations", "max_workers", "wait_s", "idle_timeout_s", "sbatch_backoff_s",
                              "sbatch_backoff_max_s", "grace_s", "threads", "poll_s", "worker", "home"}));
  AutoscaleConfig a;
  for (const auto& kv : root) {
    const std::string key = kv.first.Scalar();
    const YAML::Node& v = kv.second;
    if (key == "partition") { DD2_ASSIGN_OR_RETURN(a.partition, c.String(v, key)); }
    if (key == "time_limit") { DD2_ASSIGN_OR_RETURN(a.time_limit, c.String(v, key)); }
    if (key == "account") { DD2_ASSIGN_OR_RETURN(a.account, c.String(v, key)); }
    if (key == "worker") { DD2_ASSIGN_OR_RETURN(a.worker, c.String(v, key)); }
    if (key == "home") { DD2_ASSIGN_OR_RETURN(a.home, c.String(v, key)); }
    if (key == "device") {
      DD2_ASSIGN_OR_RETURN(a.device, c.String(v, key));
      if (a.device != "cuda" && a.device != "cpu") return c.Error(v.Mark(), key, "expected cuda or cpu");
    }
    if (key == "sbatch_args") {
      if (!v.IsSequence()) return c.Error(v.Mark(), key, absl::StrCat("expected a list, got ", YamlChecker::Kind(v)));
      for (const auto& arg : v) {
        DD2_ASSIGN_OR_RETURN(std::string s, c.String(arg, key));
        a.sbatch_args.push_back(s);
      }
    }
    if (key == "gpus_per_node") { DD2_ASSIGN_OR_RETURN(a.gpus_per_node, c.Int(v, key, 1, 64)); }
    if (key == "max_allocations") { DD2_ASSIGN_OR_RETURN(a.max_allocations, c.Int(v, key, 1, 10000)); }
    if (key == "max_workers") { DD2_ASSIGN_OR_RETURN(a.max_workers, c.Int(v, key, 1, 100000)); }
    if (key == "wait_s") { DD2_ASSIGN_OR_RETURN(a.wait_s, c.Int(v, key, 0, 86400)); }
    if (key == "idle_timeout_s") { DD2_ASSIGN_OR_RETURN(a.idle_timeout_s, c.Int(v, key, 1, 7 * 86400)); }
    if (key == "sbatch_backoff_s") { DD2_ASSIGN_OR_RETURN(a.sbatch_backoff_s, c.Int(v, key, 1, 86400)); }
    if (key == "sbatch_backoff_max_s") { DD2_ASSIGN_OR_RETURN(a.sbatch_backoff_max_s, c.Int(v, key, 1, 7 * 86400)); }
    if (key == "grace_s") { DD2_ASSIGN_OR_RETURN(a.grace_s, c.Int(v, key, 0, 86400)); }
    if (key == "threads") { DD2_ASSIGN_OR_RETURN(a.threads, c.Int(v, key, 0, 1024)); }
    if (key == "poll_s") { DD2_ASSIGN_OR_RETURN(a.poll_s, c.Int(v, key, 1, 3600)); }
  }
  if (a.sbatch_backoff_max_s < a.sbatch_backoff_s) {
    return c.Error(root["sbatch_backoff_max_s"].Mark(), "sbatch_backoff_max_s", "must be >= sbatch_backoff_s");
  }
  return a;
}

namespace {

bool DeviceFits(const std::string& job_device, const std::string& worker_device) {
  return job_device.empty() || job_device == "any" || job_device == worker_device;
}

}  // namespace

AutoscaleDecision DecideAutoscale(const AutoscaleConfig& config, const AutoscaleView& view) {
  const int64_t wait_ms = config.wait_s * 1000;
  int64_t demand = 0, waiting = 0;
  for (const auto& j : view.ready) {
    if (!DeviceFits(j.device, config.device)) continue;  // no allocation of ours could take it
    if (view.now_ms - j.ready_since_ms < wait_ms) continue;
    ++waiting;
    demand += j.workers;
  }
  if (waiting == 0) return {};
  const int64_t supply = view.free_workers + view.coming_workers;
  const int64_t deficit = demand - supply;
  if (deficit <= 0) return {};
  if (view.now_ms < view.backoff_until_ms) {
    return {0,
            absl::StrCat(waiting, " jobs waiting; sbatch backing off for ", (view.backoff_until_ms - view.now_ms) / 1000, " s"),
            "backoff"};
  }
  if (view.unfinished_allocations >= config.max_allocations) {
    return {0, absl::StrCat(waiting, " jobs waiting; at max_allocations (", config.max_allocations, ")"), "max_allocations"};
  }
  const int64_t room = config.max_workers - view.allocation_workers;
  // Whole nodes. A gang may span allocations (its ranks meet at a rendezvous), so the deficit is
  // what is missing.
  int64_t nodes = (deficit + config.gpus_per_node - 1) / config.gpus_per_node;
  nodes = std::min(nodes, room / config.gpus_per_node);
  if (nodes <= 0) {
    return {0, absl::StrCat(waiting, " jobs waiting; at max_workers (", config.max_workers, ")"), "max_workers"};
  }
  return {nodes,
          absl::StrCat(waiting, " jobs waited over ", config.wait_s, " s for ", demand, " workers; ", view.free_workers,
                       " free and ", view.coming_workers, " coming"),
          ""};
}

int64_t SbatchBackoffMs(const AutoscaleConfig& config, int64_t failures) {
  int64_t b = config.sbatch_backoff_s;
  for (int64_t i = 1; i < failures && b < config.sbatch_backoff_max_s; ++i) b *= 2;
  return std::min(b, config.sbatch_backoff_max_s) * 1000;
}

}  // namespace dd2
