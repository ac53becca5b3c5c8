// Test-only fault points: named moments at which a chaos test (tests/chaos/) kills a process.
// Off unless the environment sets DD2_FAULT_DIR, so production processes only read one
// variable. A test arms a point by creating <DD2_FAULT_DIR>/arm-<name>; the first process to
// reach the point claims it by renaming that file to hit-<name>-<pid> (atomic, so exactly one
// process stops), writes "pid ppid detail" into it and sleeps DD2_FAULT_PAUSE_MS (default
// 3000) so the test can kill it, or its parent, right there. Thread-safe.
#ifndef DD2_COMMON_FAULT_POINT_H_
#define DD2_COMMON_FAULT_POINT_H_

#include <string_view>

namespace dd2 {

// The points in use: "checkpoint_write" (rank 0 between writing a checkpoint file and its
// manifest), "attempt_end" (a worker between its job's exit and the report of it),
// "finish_transition" (the coordinator between deciding a job succeeded and committing that).
void FaultPoint(std::string_view name, std::string_view detail);

}  // namespace dd2

#endif  // DD2_COMMON_FAULT_POINT_H_
