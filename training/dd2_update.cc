#include "training/dd2_update.h"

#include <algorithm>

namespace dd2 {
namespace {

void SetLr(torch::optim::Adam& adam, double lr) {
  for (auto& group : adam.param_groups()) static_cast<torch::optim::AdamOptions&>(group.options()).lr(lr);
}

std::vector<int64_t> Prepend(int64_t first, std::vector<int64_t> rest) {
  rest.insert(rest.begin(), first);
  return rest;
}

// The random numbers of update `step`, per sequence of this rank's batch B. On the CPU (the
// default): drawn for the whole gang from a generator seeded by (seed, step) and sharded. On the
// device: this rank's share only, from the device's generator seeded by (seed, step, rank).
class Draws {
 public:
  Draws(Distributed& dist, const Dd2UpdateOptions& o, int64_t step)
      : dist_(dist), batch_(o.batch), on_device_(o.device_noise),
        gen_(on_device_ ? at::globalContext().defaultGenerator(dist.device())
                        : MakeGenerator(o.seed * 7919 + static_cast<uint64_t>(step))) {
    if (on_device_) {
      std::lock_guard<std::mutex> lock(gen_.mutex());
      gen_.set_current_seed(o.seed * 7919 + static_cast<uint64_t>(step) + 1000003ull * (dist.rank() + 1));
    }
  }
  torch::Tensor Classes(int64_t classes) {
    return Local(torch::randint(classes, {Rows()}, gen_, Options().dtype(torch::kLong)));
  }
  torch::Tensor Uniform(const std::vector<int64_t>& per_sequence, double lo, double hi) {
    return Local(torch::rand(Prepend(Rows(), per_sequence), gen_, Options()) * (hi - lo) + lo);
  }
  torch::Tensor Normal(const std::vector<int64_t>& per_sequence) {
    return Local(torch::randn(Prepend(Rows(), per_sequence), gen_, Options()));
  }
  // psi's flow-matching noise: m draws per sequence, as m blocks of the batch.
  std::pair<torch::Tensor, torch::Tensor> Flow(int64_t m, int64_t n, int64_t c, double t_min, double t_max) {
    if (!on_device_) return DrawNoise(dist_, m, Rows(), n, c, t_min, t_max, gen_);
    auto t = torch::rand({m * batch_, n}, gen_, Options()) * (t_max - t_min) + t_min;
    return {t, torch::randn({m * batch_, n, c}, gen_, Options())};
  }

 private:
  int64_t Rows() const { return on_device_ ? batch_ : batch_ * dist_.world_size(); }
  torch::TensorOptions Options() const { return torch::TensorOptions(on_device_ ? dist_.device() : torch::kCPU); }
  torch::Tensor Local(const torch::Tensor& drawn) const { return on_device_ ? drawn : dist_.Shard(drawn); }

  Distributed& dist_;
  int64_t batch_;
  bool on_device_;
  at::Generator gen_;
};

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

std::map<std::string, torch::Tensor> Dd2Updater::Step(int64_t step) {
  ArDiffusion& g = nets_.generator;
  ArDiffusion& psi = nets_.guidance;
  const TransformerOptions bo = g->backbone()->options();
  const int64_t k = o_.guidance_only ? 1 : o_.k;
  Draws draw(dist_, o_, step);
  // Linear warm-up from 1e-6, counted in guidance updates (dd2-method §5.3).
  const double frac = o_.warmup > 0 ? std::min(1.0, static_cast<double>(step * k + 1) / o_.warmup) : 1.0;
  SetLr(opt_g_, 1e-6 + (o_.lr_g - 1e-6) * frac);
  SetLr(opt_psi_, 1e-6 + (o_.lr_psi - 1e-6) * frac);
  // psi's K batches: the random numbers in the order the updates use them, then the generator
  // (fixed during these updates) samples all K batches in one forward pass.
  std::vector<torch::Tensor> classes(k), eps(k), t(k), noise(k);
  for (int64_t i = 0; i < k; ++i) {
    classes[i] = draw.Classes(bo.classes);
    eps[i] = draw.Normal({bo.tokens, bo.code_dim});
    std::tie(t[i], noise[i]) = draw.Flow(o_.m, bo.tokens, bo.code_dim, o_.t_min, o_.t_max);
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
  std::map<std::string, torch::Tensor> out = {{"guidance_loss", psi_loss / static_cast<double>(k)}};
  if (!o_.guidance_only) {
    auto classes = draw.Classes(bo.classes);
    auto eps = draw.Normal({bo.tokens, bo.code_dim});
    auto z = g->Generate(classes, eps);
    auto t = draw.Uniform({bo.tokens}, o_.t_min, o_.t_max);
    auto noise = draw.Normal({bo.tokens, bo.code_dim});
    auto loss = TokensCsdLoss(z, psi, nets_.teacher, nets_.codebook, classes, t, noise, o_.sampling, o_.csd);
    dist_.Step(opt_g_, loss);
    const double rate = EmaRate(o_.steps_before + step, o_.ema_max);
    EmaUpdate(*nets_.ema, *g, rate);
    out["csd_loss"] = loss.detach();
    out["ema_rate"] = torch::tensor(rate, torch::kFloat64);
  }
  return out;
}

}  // namespace dd2
