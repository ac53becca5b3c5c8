#include "training/distill.h"

#include <cmath>

namespace dd2 {

namespace nn = torch::nn;

namespace {

// Sinusoidal embedding of t in [0, 1] (scaled by 1000, as diffusion codebases do): [..., dim].
torch::Tensor TimeEmbedding(const torch::Tensor& t, int64_t dim) {
  const int64_t half = dim / 2;
  auto freqs = torch::exp(-std::log(10000.0) * torch::arange(half, t.options()) / half);
  auto args = (t * 1000).unsqueeze(-1) * freqs;
  return torch::cat({args.cos(), args.sin()}, -1);
}

void ZeroInit(nn::Linear& layer) {
  torch::NoGradGuard no_grad;
  layer->weight.zero_();
  layer->bias.zero_();
}

}  // namespace

AdaLnHeadImpl::AdaLnHeadImpl(const HeadOptions& o) : options_(o) {
  const int64_t w = o.width;
  input_ = register_module("input", nn::Linear(o.code_dim, w));
  time_mlp1_ = register_module("time_mlp1", nn::Linear(w, w));
  time_mlp2_ = register_module("time_mlp2", nn::Linear(w, w));
  cond_ = register_module("cond", nn::Linear(o.cond_dim, w));
  for (int64_t i = 0; i < o.depth; ++i) {
    const std::string s = std::to_string(i);
    norm_.push_back(register_module("norm" + s, nn::LayerNorm(nn::LayerNormOptions({w}).elementwise_affine(false))));
    mod_.push_back(register_module("mod" + s, nn::Linear(w, 3 * w)));
    fc1_.push_back(register_module("fc1_" + s, nn::Linear(w, w)));
    fc2_.push_back(register_module("fc2_" + s, nn::Linear(w, w)));
    ZeroInit(mod_.back());
  }
  final_norm_ = register_module("final_norm", nn::LayerNorm(nn::LayerNormOptions({w}).elementwise_affine(false)));
  final_mod_ = register_module("final_mod", nn::Linear(w, 2 * w));
  out_ = register_module("out", nn::Linear(w, o.code_dim));
  ZeroInit(final_mod_);
  ZeroInit(out_);
}

torch::Tensor AdaLnHeadImpl::TimeVector(const torch::Tensor& t) {
  return time_mlp2_->forward(torch::silu(time_mlp1_->forward(TimeEmbedding(t, options_.width))));
}

torch::Tensor AdaLnHeadImpl::forward(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& cond) {
  return Forward(x, TimeVector(t), cond);
}

torch::Tensor AdaLnHeadImpl::Forward(const torch::Tensor& x, const torch::Tensor& time, const torch::Tensor& cond) {
  auto h = input_->forward(x);
  auto c = torch::silu(time + cond_->forward(cond));
  for (size_t i = 0; i < mod_.size(); ++i) {
    auto m = mod_[i]->forward(c).chunk(3, -1);
    auto y = norm_[i]->forward(h) * (1 + m[1]) + m[0];
    y = fc2_[i]->forward(torch::silu(fc1_[i]->forward(y)));
    h = h + m[2] * y;
  }
  auto m = final_mod_->forward(c).chunk(2, -1);
  return out_->forward(final_norm_->forward(h) * (1 + m[1]) + m[0]);
}

ArDiffusionImpl::ArDiffusionImpl(const TransformerOptions& backbone, const HeadOptions& head) {
  backbone_ = register_module("backbone", ArTransformer(backbone));
  head_ = register_module("head", AdaLnHead(head));
}

torch::Tensor ArDiffusionImpl::Features(const torch::Tensor& classes, const torch::Tensor& inputs) {
  const int64_t n = backbone_->options().tokens;
  return backbone_->Hidden(classes, inputs.slice(1, 0, n - 1));
}

torch::Tensor ArDiffusionImpl::Velocity(const torch::Tensor& x, const torch::Tensor& t, const torch::Tensor& features) {
  return head_->forward(x, t, features);
}

torch::Tensor ArDiffusionImpl::Generate(const torch::Tensor& classes, const torch::Tensor& eps) {
  auto time = head_->TimeVector(torch::ones({1}, eps.options()));  // t = 1 for every token: computed once
  return eps - head_->Forward(eps, time, Features(classes, eps));
}

FrozenParameters::FrozenParameters(const std::vector<torch::Tensor>& params) {
  for (const auto& p : params) {
    if (!p.requires_grad()) continue;
    frozen_.push_back(p);
    frozen_.back().set_requires_grad(false);
  }
}

FrozenParameters::~FrozenParameters() {
  for (auto& p : frozen_) p.set_requires_grad(true);
}

torch::Tensor SampleTimes(const torch::Tensor& like, double t_min, double t_max, at::Generator& gen) {
  auto sizes = like.sizes().vec();
  sizes.pop_back();
  return (torch::rand(sizes, gen) * (t_max - t_min) + t_min).to(like.device());
}

torch::Tensor TuneLoss(const torch::Tensor& v_pred, const torch::Tensor& x_t, const torch::Tensor& t,
                       const torch::Tensor& q, const torch::Tensor& eps, const torch::Tensor& log_p,
                       const torch::Tensor& codebook, bool gts) {
  torch::Tensor target;
  {
    torch::NoGradGuard no_grad;
    target = gts ? Velocity(x_t, t, log_p, codebook) : eps - q;
  }
  return torch::mse_loss(v_pred, target);
}

torch::Tensor CsdLoss(const torch::Tensor& q, const torch::Tensor& t, const torch::Tensor& eps,
                      const torch::Tensor& log_p, const torch::Tensor& codebook,
                      const std::function<torch::Tensor(const torch::Tensor&, const torch::Tensor&)>& guidance_velocity,
                      const CsdOptions& o) {
  auto tt = t.unsqueeze(-1);
  auto x = (1 - tt) * q + tt * eps;
  auto f_phi = Denoiser(x, t, log_p, codebook);
  auto f_psi = x - tt * guidance_velocity(x, t);
  torch::Tensor omega = torch::ones({q.size(0), 1, 1}, q.options());
  if (o.normalise) {
    torch::NoGradGuard no_grad;
    omega = 1.0 / (q - f_phi).abs().mean({1, 2}, /*keepdim=*/true).clamp_min(1e-4);
  }
  auto diff = f_phi - f_psi;
  auto per = omega * diff * ((f_phi - q) - o.alpha * diff);
  return per.sum({1, 2}).mean();
}

torch::Tensor TokensCsdLoss(const torch::Tensor& z, ArDiffusion& guidance, ArTransformer& teacher,
                            const torch::Tensor& codebook, const torch::Tensor& classes, const torch::Tensor& t,
                            const torch::Tensor& eps, const SamplingConfig& sampling, const CsdOptions& csd) {
  torch::Tensor log_p, features;
  {
    torch::NoGradGuard no_grad;
    auto cond = z.detach();
    const int64_t n = cond.size(1);
    log_p = TeacherLogProbsFor(teacher, classes, cond.slice(1, 0, n - 1), sampling);
    features = guidance->Features(classes, cond);
  }
  FrozenParameters frozen(guidance->head()->parameters());
  return CsdLoss(z, t, eps, log_p, codebook,
                 [&](const torch::Tensor& x, const torch::Tensor& tt) { return guidance->Velocity(x, tt, features); },
                 csd);
}

torch::Tensor GuidanceFmLoss(ArDiffusion& guidance, const torch::Tensor& classes, const torch::Tensor& z,
                             const torch::Tensor& t, const torch::Tensor& eps) {
  auto q = z.detach();
  auto features = guidance->Features(classes, q);
  const int64_t m = t.size(0) / q.size(0);
  auto rep = [m](const torch::Tensor& x) { return torch::cat(std::vector<torch::Tensor>(m, x)); };
  auto qm = rep(q), fm = rep(features);
  auto x = (1 - t.unsqueeze(-1)) * qm + t.unsqueeze(-1) * eps;
  return torch::mse_loss(guidance->Velocity(x, t, fm), eps - qm);
}

double EmaRate(int64_t generator_step, double max_rate) {
  return std::min(max_rate, (generator_step + 1.0) / (generator_step + 10.0));
}

void CopyParameters(torch::nn::Module& to, torch::nn::Module& from) {
  torch::NoGradGuard no_grad;
  auto target = to.named_parameters();
  for (const auto& p : from.named_parameters()) target[p.key()].copy_(p.value());
}

void EmaUpdate(torch::nn::Module& ema, torch::nn::Module& model, double rate) {
  torch::NoGradGuard no_grad;
  auto target = ema.named_parameters();
  for (const auto& p : model.named_parameters()) target[p.key()].mul_(rate).add_(p.value(), 1 - rate);
}

}  // namespace dd2
