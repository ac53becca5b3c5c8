// dd2ctl's sweep commands (submit of a sweep file, sweep ls / status / cancel / extend), cancel
// and compare. Each returns the process exit code (cluster/ctl.h) and prints tables, or the
// coordinator's JSON with --json. Thread-compatible.
#ifndef DD2_CLUSTER_SWEEP_COMMANDS_H_
#define DD2_CLUSTER_SWEEP_COMMANDS_H_

#include <string>
#include <vector>

#include "common/client.h"
#include "schemas/dd2.pb.h"

namespace dd2 {

// Sends the sweep's points; only those new to the sweep (by identity) become runs. sweep_id
// set: extend that sweep; else the sweep of `submission_id`. `wait`: until every point ends
// (exit 1 unless all succeeded or were stopped by halving).
int SubmitSweep(CoordinatorClient& client, proto::SweepSpec sweep, const std::string& submission_id,
                const std::string& sweep_id, bool no_reuse, bool json, bool wait);
int SweepList(CoordinatorClient& client, bool json);
// One row per point (swept values, state, progress, final metrics; the best marked), then
// mean ± std over seeds. `watch`: refresh every second until the sweep ends.
int SweepStatus(CoordinatorClient& client, const std::string& sweep_id, bool json, bool watch);
// Cancels a run, a job (<run>/<job>) or every point of a sweep; idempotent.
int Cancel(CoordinatorClient& client, const std::string& target, bool json);
int Compare(CoordinatorClient& client, const std::vector<std::string>& run_ids, bool json);

}  // namespace dd2

#endif  // DD2_CLUSTER_SWEEP_COMMANDS_H_
