#include "training/distributed.h"

#include <cstdlib>
#include <functional>

#include <torch/csrc/distributed/c10d/ProcessGroup.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef DD2_WITH_GLOO
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#endif
#ifdef DD2_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"

namespace dd2 {

namespace {

// Names the cause of a failed collective so the coordinator can tell a hang from a lost peer.
std::string CauseOf(const std::exception& e) {
  const std::string what = std::string(e.what()).substr(0, 300);
  if (absl::StrContains(what, "imed out") || absl::StrContains(what, "imeout")) {
    return absl::StrCat("collective timeout: ", what);
  }
  return absl::StrCat("gang peer lost: ", what);
}

[[noreturn]] void Rethrow(const std::exception& e) { throw CollectiveError(CauseOf(e)); }

// The two collectives this file uses, bound to a concrete process group (c10d's classes differ
// between LibTorch versions: ProcessGroupGloo is a ProcessGroup in 1.13 and a Backend in 2.x).
struct Collectives {
  std::function<void(std::vector<at::Tensor>&)> allreduce, broadcast;
  std::function<void()> shutdown = [] {};  // before the group goes (NCCL's threads must stop first)
};

template <typename Group>
Collectives Bind(c10::intrusive_ptr<Group> pg) {
  return {[pg](std::vector<at::Tensor>& t) { pg->allreduce(t)->wait(); },
          [pg](std::vector<at::Tensor>& t) { pg->broadcast(t)->wait(); }};
}

// The process group for `o.device`: NCCL for CUDA tensors where this build has it, Gloo
// otherwise. Sets `backend`.
Collectives MakeGroup(const c10::intrusive_ptr<c10d::Store>& store, const DistributedOptions& o, std::string& backend) {
#ifdef DD2_WITH_NCCL
  if (o.device.is_cuda()) {
    // A timed-out wait() throws (and so names its cause) instead of the watchdog ending the process.
    ::setenv("TORCH_NCCL_BLOCKING_WAIT", "1", /*overwrite=*/0);
    auto no = c10d::ProcessGroupNCCL::Options::create();
    no->timeout = o.timeout;
    backend = "nccl";
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size, no);
    Collectives ops = Bind(pg);
    ops.shutdown = [pg] { pg->shutdown(); };
    return ops;
  }
#endif
#ifdef DD2_WITH_GLOO
  auto go = c10d::ProcessGroupGloo::Options::create(o.timeout);
  go->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(o.host));
  backend = "gloo";
  return Bind(c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, go));
#else
  throw std::runtime_error(o.device.is_cuda() ? "this build has neither NCCL nor Gloo"
                                              : "this build has no Gloo for CPU gangs");
#endif
}

}  // namespace

struct Distributed::Group {
  c10::intrusive_ptr<c10d::Store> store;
  Collectives ops;
};

absl::StatusOr<std::unique_ptr<Distributed>> Distributed::Create(const DistributedOptions& o) {
  std::unique_ptr<Distributed> d(new Distributed(o));
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", o.rank, " is outside world size ", o.world_size));
  }
  if (o.world_size == 1 && !o.force_group) return d;
  const std::string prefix = "tcp://";
  const size_t colon = o.rendezvous.rfind(':');
  uint32_t port = 0;
  if (!absl::StartsWith(o.rendezvous, prefix) || colon == std::string::npos ||
      !absl::SimpleAtoi(o.rendezvous.substr(colon + 1), &port) || port == 0 || port > 65535) {
    return absl::InvalidArgumentError(
        absl::StrCat("rendezvous '", o.rendezvous, "' is not tcp://HOST:PORT"));
  }
  const std::string host = o.rendezvous.substr(prefix.size(), colon - prefix.size());
  try {
    d->group_ = std::make_unique<Group>();
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(port);
    so.isServer = o.rank == 0;
    so.numWorkers = o.world_size;
    so.timeout = o.timeout;
    d->group_->store = c10::make_intrusive<c10d::TCPStore>(host, so);
    d->group_->ops = MakeGroup(d->group_->store, o, d->backend_);
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat(CauseOf(e), " (rendezvous at ", o.rendezvous, ")"));
  }
  return d;
}

bool Distributed::HasNccl() {
#ifdef DD2_WITH_NCCL
  return true;
#else
  return false;
#endif
}

Distributed::Distributed(const DistributedOptions& options) : options_(options) {}
Distributed::~Distributed() {
  if (group_) group_->ops.shutdown();
}

void Distributed::AllReduceSum(std::vector<torch::Tensor>& tensors) {
  try {
    group_->ops.allreduce(tensors);
  } catch (const CollectiveError&) {
    throw;
  } catch (const std::exception& e) {
    Rethrow(e);
  }
}

void Distributed::Step(torch::optim::Optimizer& optimizer, const torch::Tensor& loss) {
  optimizer.zero_grad();
  loss.backward();
  AverageAndStep(optimizer);
}

void Distributed::Step(torch::optim::Optimizer& optimizer, const std::vector<torch::Tensor>& grads) {
  optimizer.zero_grad();
  size_t i = 0;
  for (auto& group : optimizer.param_groups()) {
    for (auto& p : group.params()) {
      TORCH_CHECK(i < grads.size(), "Distributed::Step: ", grads.size(), " gradients for more parameters");
      if (grads[i].defined()) p.mutable_grad() = grads[i];
      ++i;
    }
  }
  TORCH_CHECK(i == grads.size(), "Distributed::Step: ", grads.size(), " gradients for ", i, " parameters");
  AverageAndStep(optimizer);
}

void Distributed::AverageAndStep(torch::optim::Optimizer& optimizer) {
  if (group_) {
    std::vector<torch::Tensor> grads;
    for (auto& group : optimizer.param_groups()) {
      for (auto& p : group.params()) {
        if (p.grad().defined()) grads.push_back(p.grad());
      }
    }
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<torch::Tensor> flat = {torch::cat([&] {
      std::vector<torch::Tensor> views;
      for (auto& g : grads) views.push_back(g.reshape(-1));
      return views;
    }())};
    AllReduceSum(flat);
    flat[0].div_(options_.world_size);
    int64_t offset = 0;
    for (auto& g : grads) {
      g.copy_(flat[0].slice(0, offset, offset + g.numel()).view_as(g));
      offset += g.numel();
    }
    allreduce_ms_ += std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  }
  optimizer.step();
}

void Distributed::Broadcast(torch::nn::Module& module) {
  if (!group_) return;
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> tensors;
  for (auto& p : module.parameters()) tensors.push_back(p.data());
  for (auto& b : module.buffers()) tensors.push_back(b);
  for (auto& t : tensors) {
    std::vector<torch::Tensor> one = {t};
    try {
      group_->ops.broadcast(one);
    } catch (const std::exception& e) {
      Rethrow(e);
    }
  }
}

bool Distributed::AnyStop(bool mine) {
  if (!group_) return mine;
  std::vector<torch::Tensor> flag = {torch::full({1}, mine ? 1.0f : 0.0f, torch::TensorOptions().device(options_.device))};
  AllReduceSum(flag);
  return flag[0].item<float>() > 0;
}

torch::Tensor Distributed::Shard(const torch::Tensor& global, int64_t dim) const {
  if (options_.world_size == 1) return global.to(options_.device);
  const int64_t n = global.size(dim) / options_.world_size;
  return global.narrow(dim, n * options_.rank, n).to(options_.device);
}

double Distributed::TakeAllReduceMs() {
  const double ms = allreduce_ms_;
  allreduce_ms_ = 0;
  return ms;
}

}  // namespace dd2
