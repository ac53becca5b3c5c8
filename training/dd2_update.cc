#include "training/dd2_update.h"

#include <algorithm>

namespace dd2 {
namespace {

void SetLr(torch::optim::Adam& adam, double lr) {
  for (auto& group : adam.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

}  // namespace

std::pair<torch::Tensor, torch::Tensor> DrawNoise(Distributed& dist, int64_t m, int64_t global_batch, int64_t n,
                                                  int64_t c, double t_min, double t_max, at::Generator& gen) {
  auto t = torch::rand({m, global_batch, n}, gen) * (t_max - t_min) + t_min;
  auto eps = torch::randn({m, global_batch, n, c}, gen);
  return {dist.Shard(t, 1).reshape({-1, n}), dist.Shard(eps, 1).reshape({-1, n, c})};
}

Dd2Updater::Dd2Updater(Distributed& dist, Dd2Networks nets, torch::optim::Adam& opt_g, torch::optim::Adam& opt_psi,
                       const Dd2UpdateOptions& options)
    : dist_(dist), nets_(std::move(nets)), opt_g_(opt_g), opt_psi_(opt_psi), o_(options) {}

std::map<std::string, double> Dd2Updater::Step(int64_t step) {
  ArDiffusion& g = nets_.generator;
  ArDiffusion& psi = nets_.guidance;
  const TransformerOptions bo = g->backbone()->options();
  const int64_t k = o_.guidance_only ? 1 : o_.k, global_batch = o_.batch * dist_.world_size();
  auto gen = MakeGenerator(o_.seed * 7919 + static_cast<uint64_t>(step));
  // Linear warm-up from 1e-6, counted in guidance updates (dd2-method §5.3).
  const double frac = o_.warmup > 0 ? std::min(1.0, static_cast<double>(step * k + 1) / o_.warmup) : 1.0;
  SetLr(opt_g_, 1e-6 + (o_.lr_g - 1e-6) * frac);
  SetLr(opt_psi_, 1e-6 + (o_.lr_psi - 1e-6) * frac);
  // psi's K batches: the random numbers in the order the updates use them, then the generator
  // (fixed during these updates) samples all K batches in one forward pass.
  std::vector<torch::Tensor> classes(k), eps(k), t(k), noise(k);
  for (int64_t i = 0; i < k; ++i) {
    classes[i] = dist_.Shard(torch::randint(bo.classes, {global_batch}, gen, torch::kLong));
    eps[i] = dist_.Shard(torch::randn({global_batch, bo.tokens, bo.code_dim}, gen));
    std::tie(t[i], noise[i]) = DrawNoise(dist_, o_.m, global_batch, bo.tokens, bo.code_dim, o_.t_min, o_.t_max, gen);
  }
  std::vector<torch::Tensor> z;
  {
    torch::NoGradGuard no_grad;
    z = g->Generate(torch::cat(classes), torch::cat(eps)).chunk(k);
  }
  torch::Tensor psi_loss;  // summed on the device: no host sync inside the update
  for (int64_t i = 0; i < k; ++i) {
    auto loss = GuidanceFmLoss(psi, classes[i], z[i], t[i], noise[i]);
    dist_.Step(opt_psi_, loss);
    psi_loss = i == 0 ? loss.detach() : psi_loss + loss.detach();
  }
  std::map<std::string, double> out = {{"guidance_loss", psi_loss.item<double>() / static_cast<double>(k)}};
  if (!o_.guidance_only) {
    auto classes = dist_.Shard(torch::randint(bo.classes, {global_batch}, gen, torch::kLong));
    auto eps = dist_.Shard(torch::randn({global_batch, bo.tokens, bo.code_dim}, gen));
    auto z = g->Generate(classes, eps);
    auto t = dist_.Shard(torch::rand({global_batch, bo.tokens}, gen) * (o_.t_max - o_.t_min) + o_.t_min);
    auto noise = dist_.Shard(torch::randn({global_batch, bo.tokens, bo.code_dim}, gen));
    auto loss = TokensCsdLoss(z, psi, nets_.teacher, nets_.codebook, classes, t, noise, o_.sampling, o_.csd);
    dist_.Step(opt_g_, loss);
    const double rate = EmaRate(o_.steps_before + step, o_.ema_max);
    EmaUpdate(*nets_.ema, *g, rate);
    out["csd_loss"] = loss.item<double>();
    out["ema_rate"] = rate;
  }
  return out;
}

}  // namespace dd2
