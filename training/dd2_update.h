// One update of DD2 stage 2 (dd2-method §5.2-§5.3), the body of the `distill` and `align` jobs'
// loops: K guidance (psi) updates by flow matching on fresh generator samples, then (unless
// guidance_only) one generator update by the CSD loss and the progressive EMA. Every random
// number of update `step` comes from a generator seeded by (seed, step) (see device_noise), so a
// resumed run repeats the same numbers. Holds the modules and optimizers it is given (shared
// handles); not thread-safe.
#ifndef DD2_TRAINING_DD2_UPDATE_H_
#define DD2_TRAINING_DD2_UPDATE_H_

#include <functional>
#include <map>
#include <string>

#include <torch/torch.h>

#include "training/distill.h"
#include "training/distributed.h"

namespace dd2 {

// Flow-matching noise for m draws per sequence of the gang's batch (global_batch sequences of
// n tokens in C dims), drawn whole from `gen` so every gang size sees the same numbers; this
// rank's share, laid out as m blocks of its batch: t [m*B, n], eps [m*B, n, C].
std::pair<torch::Tensor, torch::Tensor> DrawNoise(Distributed& dist, int64_t m, int64_t global_batch, int64_t n,
                                                  int64_t c, double t_min, double t_max, at::Generator& gen);

struct Dd2UpdateOptions {
  bool guidance_only = false;  // align: K = 1 guidance update, no generator update
  int64_t k = 5;               // guidance updates per generator update
  int64_t m = 4;               // flow-matching draws per sequence for psi
  int64_t batch = 32;          // per rank
  int64_t warmup = 0;          // linear lr warm-up, counted in guidance updates
  double lr_g = 1e-4, lr_psi = 1e-4;
  double t_min = 0.01, t_max = 0.99;
  double ema_max = 0.9999;
  int64_t steps_before = 0;    // generator updates behind the init (the EMA rate continues)
  uint64_t seed = 0;
  // false: every random number is drawn on the CPU for the whole gang and sharded, so a seed
  // gives the same numbers on any device and gang size (the tests' and resume's contract).
  // true: each rank draws its own share on its device (no host-to-device copies, what a GPU
  // wants at large batches): reproducible for the same seed, device type and gang size only.
  bool device_noise = false;
  // CPU threads that each compute an equal part of the batch (its forward and backward, one
  // intra-op thread each) before the gradients are averaged: the same losses and gradients up
  // to float rounding. 1: the whole batch on the caller's thread. Must divide the batch.
  int64_t batch_threads = 1;
  CsdOptions csd;
  SamplingConfig sampling;
};

struct Dd2Networks {
  ArDiffusion generator{nullptr}, guidance{nullptr}, ema{nullptr};
  ArTransformer teacher{nullptr};
  torch::Tensor codebook;  // [V, C], detached
};

class Dd2Updater {
 public:
  Dd2Updater(Distributed& dist, Dd2Networks nets, torch::optim::Adam& opt_g, torch::optim::Adam& opt_psi,
             const Dd2UpdateOptions& options);
  // Update `step` (0-based within this job). Returns guidance_loss (mean over the K updates)
  // and, for distill, csd_loss and ema_rate, as scalar tensors on the networks' device: nothing
  // in the update waits for the device (the caller reads them when it reports).
  std::map<std::string, torch::Tensor> Step(int64_t step);

 private:
  // dist_.Step on the loss of the whole batch, computed as batch_threads parts on as many
  // threads (loss_of_part(s) for part s); returns the batch's loss, detached.
  torch::Tensor PartsStep(torch::optim::Optimizer& optimizer, const std::function<torch::Tensor(int64_t)>& loss_of_part);

  Distributed& dist_;
  Dd2Networks nets_;
  torch::optim::Adam& opt_g_;
  torch::optim::Adam& opt_psi_;
  Dd2UpdateOptions o_;
};

}  // namespace dd2

#endif  // DD2_TRAINING_DD2_UPDATE_H_
