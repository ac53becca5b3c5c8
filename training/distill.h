// DD2 stage 1 and 2 building blocks (dd2-method.md §2-§5):
//  - AdaLnHead: a MAR-style MLP head, adaLN-modulated by a time embedding and a condition
//    vector, velocity output, zero-initialised output layer (so a fresh head predicts v = 0).
//  - ArDiffusion: the teacher's backbone plus an AdaLnHead. As the guidance network psi it
//    reads shifted clean tokens; as the generator G it reads [class, eps_1 .. eps_{n-1}] and its
//    head sees (eps_i, t = 1, f_i), giving x = eps - v (one Euler step from noise).
//  - The losses: GTS (velocity regression on the closed-form target, or the Monte-Carlo
//    flow-matching target for the ablation), flow matching for psi, and the CSD loss in SiD
//    form with stop-gradient conditions.
// Modules are not thread-safe.
#ifndef DD2_TRAINING_DISTILL_H_
#define DD2_TRAINING_DISTILL_H_

#include <functional>

#include <torch/torch.h>

#include "training/closed_form.h"
#include "training/models.h"

namespace dd2 {

struct HeadOptions {
  int64_t code_dim = 8;
  int64_t cond_dim = 128;
  int64_t width = 128;
  int64_t depth = 2;
};

class AdaLnHeadImpl : public torch::nn::Module {
 public:
  explicit AdaLnHeadImpl(const HeadOptions& options);
  // x [..., C], t [...], cond [..., cond_dim] -> velocity [..., C].
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& cond);
  // The time conditioning of times t [...]: [..., width].
  torch::Tensor TimeVector(const torch::Tensor& t);
  // forward with the time conditioning given, broadcastable against cond's projection (one
  // vector for a time every token shares, as the generator's t = 1).
  torch::Tensor Forward(const torch::Tensor& x, const torch::Tensor& time, const torch::Tensor& cond);

 private:
  HeadOptions options_;
  torch::nn::Linear input_{nullptr}, time_mlp1_{nullptr}, time_mlp2_{nullptr}, cond_{nullptr};
  std::vector<torch::nn::Linear> mod_, fc1_, fc2_;
  std::vector<torch::nn::LayerNorm> norm_;
  torch::nn::LayerNorm final_norm_{nullptr};
  torch::nn::Linear final_mod_{nullptr}, out_{nullptr};
};
TORCH_MODULE(AdaLnHead);

class ArDiffusionImpl : public torch::nn::Module {
 public:
  ArDiffusionImpl(const TransformerOptions& backbone, const HeadOptions& head);
  // Causal features f_i [B, n, width] from [class, inputs_1 .. inputs_{n-1}] (inputs [B, n, C]
  // or [B, n-1, C]; only the first n-1 are read).
  torch::Tensor Features(const torch::Tensor& classes, const torch::Tensor& inputs);
  // Velocity at (x, t) given features.
  torch::Tensor Velocity(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& features);
  // As a generator: eps [B, n, C] -> tokens x = eps - v(eps, 1, f(eps_<i)).
  torch::Tensor Generate(const torch::Tensor& classes, const torch::Tensor& eps);
  ArTransformer backbone() { return backbone_; }
  AdaLnHead head() { return head_; }

 private:
  ArTransformer backbone_{nullptr};
  AdaLnHead head_{nullptr};
};
TORCH_MODULE(ArDiffusion);

// Sets requires_grad false on those of `params` that have it, for its lifetime, and puts back
// only those: parameters a caller froze already are read, never written, so calls on several
// threads under one freeze of the caller's do not race.
class FrozenParameters {
 public:
  explicit FrozenParameters(const std::vector<torch::Tensor>& params);
  ~FrozenParameters();
  FrozenParameters(const FrozenParameters&) = delete;
  FrozenParameters& operator=(const FrozenParameters&) = delete;

 private:
  std::vector<torch::Tensor> frozen_;
};

// Per-token times t ~ U[t_min, t_max], shape `like` without the last dim.
torch::Tensor SampleTimes(const torch::Tensor& like, double t_min, double t_max, at::Generator& gen);

// Stage 1: mean ||v_pred - target||^2 where the target is the closed-form velocity v_Phi
// (gts = true) or eps - q (the Monte-Carlo flow-matching target).
torch::Tensor TuneLoss(const torch::Tensor& v_pred, const torch::Tensor& x_t, const torch::Tensor& t,
                       const torch::Tensor& q, const torch::Tensor& eps, const torch::Tensor& log_p,
                       const torch::Tensor& codebook, bool gts);

struct CsdOptions {
  double alpha = 1.0;          // SiD alpha
  bool normalise = true;       // omega = 1 / mean|q - F_Phi| per sequence (stop-gradient); else 1
};

// The generator loss (SiD form, x0 parameterisation) summed over positions, mean over batch.
// q [B, n, C] carries the generator's gradient; log_p are the teacher's log-probs given sg(q_<i);
// guidance_velocity(x_t, t) is psi's head on sg-features, parameters frozen, differentiable
// in x_t.
torch::Tensor CsdLoss(const torch::Tensor& q, const torch::Tensor& t, const torch::Tensor& eps,
                      const torch::Tensor& log_p, const torch::Tensor& codebook,
                      const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& guidance_velocity,
                      const CsdOptions& options);

// The generator objective on tokens z = G(eps) (carrying the generator's gradient): the
// teacher's log-probs (CFG etc. from `sampling`) and psi's backbone features are computed from
// sg(z) under no-grad, psi's head parameters are frozen for the call, and the gradient reaches z
// through the closed-form denoiser's and psi's head's inputs and the explicit z term only.
torch::Tensor TokensCsdLoss(const torch::Tensor& z, ArDiffusion& guidance, ArTransformer& teacher,
                            const torch::Tensor& codebook, const torch::Tensor& classes, const torch::Tensor& t,
                            const torch::Tensor& eps, const SamplingConfig& sampling, const CsdOptions& csd);

// psi's loss on detached generator tokens z [B, n, C]: flow matching mean ||v - (eps - z)||^2
// at m = t.size(0) / B draws per sequence, t [m*B, n] and eps [m*B, n, C] laid out as m blocks
// of the batch; the backbone runs once.
torch::Tensor GuidanceFmLoss(ArDiffusion& guidance, const torch::Tensor& classes, const torch::Tensor& z,
                             const torch::Tensor& t, const torch::Tensor& eps);

// Progressive EMA (dd2-method §5.3): rate min(max_rate, (step + 1) / (step + 10)).
double EmaRate(int64_t generator_step, double max_rate);
void EmaUpdate(torch::nn::Module& ema, torch::nn::Module& model, double rate);
// `to`'s parameters <- `from`'s, by name (the same architecture, or `to` a part of it).
void CopyParameters(torch::nn::Module& to, torch::nn::Module& from);

}  // namespace dd2

#endif  // DD2_TRAINING_DISTILL_H_
