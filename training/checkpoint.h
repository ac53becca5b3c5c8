// Training checkpoints: named modules, an optimizer and the step, in one LibTorch archive
// written to a temp file and renamed into place (a reader never sees a torn file).
// The adapter boundary for LibTorch serialization exceptions. Thread-compatible.
#ifndef DD2_TRAINING_CHECKPOINT_H_
#define DD2_TRAINING_CHECKPOINT_H_

#include <string>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace dd2 {

using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>;
using NamedOptimizers = std::vector<std::pair<std::string, torch::optim::Optimizer*>>;

// optimizers may be empty (an inference-only artifact).
absl::Status SaveCheckpoint(const std::string& path, const NamedModules& modules,
                            const NamedOptimizers& optimizers, int64_t step);

// Restores what SaveCheckpoint wrote and returns its step, onto the device the modules' (or
// else the optimizers') parameters are on, whichever device wrote it. NotFound when `path` does
// not exist; DataLoss when it cannot be read.
absl::StatusOr<int64_t> LoadCheckpoint(const std::string& path, const NamedModules& modules,
                                       const NamedOptimizers& optimizers);

}  // namespace dd2

#endif  // DD2_TRAINING_CHECKPOINT_H_
