// dd2ctl: the command-line client. RunCtl parses argv, runs one command against the
// coordinator found through the dd2 home (or --endpoint) and returns the process exit code:
// 0 ok, 1 the run/command failed, 2 invalid input, 3 not found, 4 coordinator unreachable.
// Human output goes to stdout as tables and progress bars; --json prints the coordinator's
// documented JSON (README, "JSON output") unchanged. Errors go to stderr.
#ifndef DD2_CLUSTER_CTL_H_
#define DD2_CLUSTER_CTL_H_

namespace dd2 {

int RunCtl(int argc, char** argv);

}  // namespace dd2

#endif  // DD2_CLUSTER_CTL_H_
