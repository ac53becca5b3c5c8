// dd2-train: the job child for the LibTorch job types. The worker daemon runs
// `dd2-train job-run --type T ...` for every type it does not implement itself.
#include <torch/torch.h>

#include "training/jobs.h"
#include "worker/job_registry.h"

int main(int argc, char** argv) {
  if (argc < 2 || std::string(argv[1]) != "job-run") {
    std::fprintf(stderr, "usage: dd2-train job-run --type T --params JSON --attempt-id ID [...]\n"
                         "(started by dd2-worker; see worker/job_registry.h)\n");
    return 2;
  }
  dd2::RegisterTrainingJobTypes();
  return dd2::JobRunMain(argc - 1, argv + 1);
}
