// Data parallelism for the LibTorch job types (DESIGN.md, Gangs): a c10d process group over the
// attempt's rendezvous (ProcessGroupNCCL for a CUDA device where the build has it, defined
// DD2_WITH_NCCL; ProcessGroupGloo otherwise, defined DD2_WITH_GLOO), gradient averaging,
// parameter broadcast from rank 0, global-batch sharding onto the rank's device, and a
// collective stop vote so every rank checkpoints at the same step. With world size 1 every call
// is a local no-op (unless force_group), so a single worker pays nothing. A collective that fails raises
// CollectiveError whose message starts with its cause ("collective timeout" or "gang peer
// lost"). Lives in a job child; not thread-safe.
#ifndef DD2_TRAINING_DISTRIBUTED_H_
#define DD2_TRAINING_DISTRIBUTED_H_

#include <chrono>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include <torch/torch.h>

#include "absl/status/statusor.h"

namespace dd2 {

class CollectiveError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct DistributedOptions {
  int rank = 0;
  int world_size = 1;
  std::string rendezvous;   // "tcp://HOST:PORT": rank 0 serves the store there
  std::string host = "127.0.0.1";  // the address this rank's collectives listen on
  std::chrono::milliseconds timeout{std::chrono::seconds(300)};
  torch::Device device = torch::kCPU;  // where this rank's tensors live; CUDA selects NCCL
  bool force_group = false;  // build the process group even for one rank (to check a backend)
};

class Distributed {
 public:
  // Whether this build has the NCCL process group (a CUDA LibTorch with nccl.h at build time).
  static bool HasNccl();
  // Joins the group (blocks until every rank arrived, or fails after the timeout).
  static absl::StatusOr<std::unique_ptr<Distributed>> Create(const DistributedOptions& options);
  ~Distributed();

  int rank() const { return options_.rank; }
  int world_size() const { return options_.world_size; }
  bool is_chief() const { return options_.rank == 0; }
  const torch::Device& device() const { return options_.device; }
  // "nccl", "gloo", or "none" (world size 1 without force_group).
  const std::string& backend() const { return backend_; }

  // zero_grad, backward, average the gradients over the ranks, optimizer step.
  void Step(torch::optim::Optimizer& optimizer, const torch::Tensor& loss);
  // The same with this rank's gradients given instead of a loss: one per parameter of the
  // optimizer, in its order (undefined: the parameter gets none, as an unused one).
  void Step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& grads);
  // Rank 0's parameters and buffers, everywhere.
  void Broadcast(torch::nn::Module& module);
  // True on every rank when any rank wants to stop.
  bool AnyStop(bool mine);
  // This rank's equal slice of a tensor drawn for the whole gang along `dim` (drawn on the CPU,
  // so every device sees the same numbers), on this rank's device.
  torch::Tensor Shard(const torch::Tensor& global, int64_t dim = 0) const;
  // Milliseconds spent in gradient all-reduce since the last call.
  double TakeAllReduceMs();

 private:
  explicit Distributed(const DistributedOptions& options);
  void AllReduceSum(std::vector<torch::Tensor>& tensors);
  // Averages the parameters' gradients over the ranks, then the optimizer's step.
  void AverageAndStep(torch::optim::Optimizer& optimizer);

  struct Group;  // the c10d process group, kept out of this header
  DistributedOptions options_;
  std::unique_ptr<Group> group_;
  std::string backend_ = "none";
  double allreduce_ms_ = 0;
};

}  // namespace dd2

#endif  // DD2_TRAINING_DISTRIBUTED_H_
