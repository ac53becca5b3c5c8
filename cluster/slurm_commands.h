// dd2ctl's SLURM commands: `slurm launch` renders cluster/slurm/dd2-workers.sbatch and submits it
// with sbatch (retrying SLURM's transient errors with backoff), then records the allocation in
// the coordinator; `slurm ls` shows every allocation with SLURM's state and the workers it
// holds; `slurm cancel` scancels one. Each returns the process exit code (cluster/ctl_output.h).
// Thread-compatible.
#ifndef DD2_CLUSTER_SLURM_COMMANDS_H_
#define DD2_CLUSTER_SLURM_COMMANDS_H_

#include <string>

#include "common/client.h"
#include "common/slurm.h"

namespace dd2 {

// `spec` needs everything but the coordinator endpoint and, when empty, the worker binary
// (default: dd2-worker beside dd2ctl) and the storage root (default: `home`, made absolute).
// `dry_run`: print the script and submit nothing (the coordinator is not asked).
int SlurmLaunch(CoordinatorClient* client, const std::string& endpoint, const std::string& home, SlurmLaunchSpec spec,
                bool dry_run, bool json, SlurmCommands& slurm);
int SlurmList(CoordinatorClient& client, bool json);
// `target`: an allocation id (alloc-N) or its SLURM job id.
int SlurmCancel(CoordinatorClient& client, const std::string& target, bool json, SlurmCommands& slurm);

}  // namespace dd2

#endif  // DD2_CLUSTER_SLURM_COMMANDS_H_
