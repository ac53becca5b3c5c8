// The chaos harness: a small DD2 pipeline (a 2-rank teacher and distill gang, checkpoints
// every few steps, checkpoint evals) on a local coordinator and 3 workers, while the harness
// kill -9s workers and the coordinator at planned moments and restarts them. Some faults aim at
// a moment through a fault point (common/fault_point.h): a checkpoint file written but not yet
// committed, a job that exited but whose worker has not reported it, a coordinator that decided
// a job succeeded but has not committed it. Then it checks that nothing was lost: the run
// succeeded, each job succeeded exactly once (events), every committed checkpoint verifies
// against its manifest, metric steps never go backwards within an attempt, no child process
// outlives the cluster, and dd2ctl's views agree with the SQLite file. Used by chaos_test and
// the dd2-chaos command. Thread-compatible.
#ifndef DD2_TESTS_CHAOS_CHAOS_H_
#define DD2_TESTS_CHAOS_CHAOS_H_

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

namespace dd2::chaos {

struct Fault {
  std::string target;  // "worker" or "coordinator"
  // "random" (after delay_ms), or the fault point it waits for: "checkpoint_write",
  // "attempt_end" (targets: worker), "finish_transition" (coordinator).
  std::string moment;
  int64_t delay_ms = 0;
  // Filled when it fires.
  bool fired = false;
  double at_s = 0;      // seconds since the run was submitted
  std::string victim;   // e.g. "worker local-2 (pid 123)"
  std::string detail;   // what the process was doing
};

// A seeded plan of `count` faults (count >= 7): three at a checkpoint write (in the first half:
// checkpoints end with the distillation), two at a job's end on its worker, two at the
// coordinator's success transition, the rest random kills of a worker or the coordinator; in a
// seeded order. Pure.
std::vector<Fault> PlanFaults(uint64_t seed, int count);

struct Options {
  uint64_t seed = 1;
  int faults = 12;
  std::string home;     // a fresh folder; the cluster lives there
  std::string bin_dir;  // dd2ctl, dd2-coordinator, dd2-worker, dd2-train
  int pause_ms = 3000;  // how long a process waits at an armed fault point
  int moment_timeout_s = 120;  // a fault whose moment does not come within this is not fired
  int run_timeout_s = 600;
};

struct Report {
  std::string run_id;
  std::vector<Fault> faults;
  std::vector<std::string> failures;  // broken guarantees, each a sentence; empty: nothing lost
  int fired() const;
};

// Runs the scenario, writing the fault log and the checks' results to `log` as they happen.
// Leaves the cluster stopped.
Report Run(const Options& options, std::ostream& log);

}  // namespace dd2::chaos

#endif  // DD2_TESTS_CHAOS_CHAOS_H_
