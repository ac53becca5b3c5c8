#include "training/models.h"

#include <ATen/CPUGeneratorImpl.h>

#include <cmath>

#include "absl/strings/str_cat.h"

#include "training/llamagen.h"

namespace dd2 {

namespace nn = torch::nn;

at::Generator MakeGenerator(uint64_t seed) { return at::detail::createCPUGenerator(seed); }

// ---------------------------------------------------------------- VqVae

VqVaeImpl::VqVaeImpl(const VqVaeOptions& o) : options_(o) {
  TORCH_CHECK(o.grid == 7 || o.grid == 16, "tokenizer grid must be 7 or 16, got ", o.grid);
  const int64_t ch = o.channels;
  const bool seven = o.grid == 7;
  // 7x7: 28 -> 14 -> 7 by two strided convs. 16x16: 32 (padded) -> 16 by one, then a 3x3 conv.
  // The decoder mirrors it. Module indices are the same for both grids.
  nn::Sequential encoder;
  encoder->push_back(nn::Conv2d(nn::Conv2dOptions(1, ch / 2, 4).stride(2).padding(1)));
  encoder->push_back(nn::ReLU());
  encoder->push_back(nn::Conv2d(nn::Conv2dOptions(ch / 2, ch, seven ? 4 : 3).stride(seven ? 2 : 1).padding(1)));
  encoder->push_back(nn::ReLU());
  encoder->push_back(nn::Conv2d(nn::Conv2dOptions(ch, ch, 3).padding(1)));
  encoder->push_back(nn::ReLU());
  encoder->push_back(nn::Conv2d(nn::Conv2dOptions(ch, o.code_dim, 1)));
  encoder_ = register_module("encoder", encoder);
  nn::Sequential decoder;
  decoder->push_back(nn::Conv2d(nn::Conv2dOptions(o.code_dim, ch, 3).padding(1)));
  decoder->push_back(nn::ReLU());
  decoder->push_back(nn::Conv2d(nn::Conv2dOptions(ch, ch, 3).padding(1)));
  decoder->push_back(nn::ReLU());
  decoder->push_back(nn::ConvTranspose2d(nn::ConvTranspose2dOptions(ch, ch / 2, 4).stride(2).padding(1)));
  decoder->push_back(nn::ReLU());
  if (seven) {
    decoder->push_back(nn::ConvTranspose2d(nn::ConvTranspose2dOptions(ch / 2, 1, 4).stride(2).padding(1)));
  } else {
    decoder->push_back(nn::Conv2d(nn::Conv2dOptions(ch / 2, 1, 3).padding(1)));
  }
  decoder->push_back(nn::Sigmoid());
  decoder_ = register_module("decoder", decoder);
  codebook_ = register_module("codebook", nn::Embedding(o.codebook_size, o.code_dim));
  usage_ = register_buffer("usage", torch::zeros({o.codebook_size}, torch::kFloat32));
}

int64_t VqVaeImpl::TrackAndRestart(const torch::Tensor& indices, const torch::Tensor& latents, bool window_end,
                                   at::Generator& generator) {
  torch::NoGradGuard no_grad;
  usage_ += torch::bincount(indices.reshape(-1), {}, options_.codebook_size).to(torch::kFloat32);
  if (!window_end) return 0;
  auto dead = (usage_ == 0).nonzero().squeeze(1);
  const int64_t n = dead.size(0);
  if (n > 0) {
    auto pool = latents.detach().reshape({-1, options_.code_dim});
    auto pick = torch::randint(pool.size(0), {n}, generator, torch::kLong).to(pool.device());  // drawn on the CPU
    codebook_->weight.index_copy_(0, dead, pool.index_select(0, pick));
  }
  usage_.zero_();
  return n;
}

torch::Tensor VqVaeImpl::Codebook() {
  return torch::nn::functional::normalize(codebook_->weight, nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor VqVaeImpl::Encode(const torch::Tensor& images) {
  const int64_t pad = options_.grid == 16 ? 2 : 0;  // 28 -> 32
  auto z = encoder_->forward(pad ? nn::functional::pad(images, nn::functional::PadFuncOptions({pad, pad, pad, pad}))
                                 : images);              // [B, C, grid, grid]
  z = z.flatten(2).transpose(1, 2);                      // [B, n, C]
  return nn::functional::normalize(z, nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor VqVaeImpl::Quantize(const torch::Tensor& latents) {
  return torch::matmul(latents, Codebook().transpose(0, 1)).argmax(-1);
}

torch::Tensor VqVaeImpl::Decode(const torch::Tensor& vectors) {
  const int64_t b = vectors.size(0);
  const int64_t g = options_.grid;
  auto images = decoder_->forward(vectors.transpose(1, 2).reshape({b, options_.code_dim, g, g}));
  return g == 16 ? images.slice(2, 2, 30).slice(3, 2, 30) : images;  // 32 -> 28
}

VqOutput VqVaeImpl::forward(const torch::Tensor& images) {
  auto z = Encode(images);
  auto idx = Quantize(z);
  auto q = Codebook().index_select(0, idx.view(-1)).view(z.sizes());
  auto vq_loss = torch::mse_loss(q, z.detach()) + options_.commitment * torch::mse_loss(z, q.detach());
  auto st = z + (q - z).detach();  // straight-through
  return {Decode(st), idx, vq_loss};
}

// ---------------------------------------------------------------- ArTransformer

int64_t GridSide(int64_t tokens) {
  const auto side = static_cast<int64_t>(std::lround(std::sqrt(static_cast<double>(tokens))));
  return side * side == tokens ? side : 0;
}

absl::Status ValidateTransformerOptions(const TransformerOptions& o) {
  auto invalid = [&](const std::string& what) {
    return absl::InvalidArgumentError(absl::StrCat("teacher with arch ", o.arch, ": ", what));
  };
  if (o.heads <= 0 || o.width % o.heads != 0) {
    return invalid(absl::StrCat("width ", o.width, " must be a multiple of heads ", o.heads));
  }
  if (o.arch == "dd2") {
    if (o.input != "linear") return invalid(absl::StrCat("reads token vectors through a linear layer, not ", o.input));
    return absl::OkStatus();
  }
  if (o.arch != "llamagen") return invalid("unknown architecture (dd2 or llamagen)");
  if ((o.width / o.heads) % 4 != 0) {
    return invalid(absl::StrCat("width / heads = ", o.width / o.heads, " must be a multiple of 4 (2D rotary pairs)"));
  }
  if (o.kv_heads < 0 || (o.kv_heads > 0 && o.heads % o.kv_heads != 0)) {
    return invalid(absl::StrCat("kv_heads ", o.kv_heads, " must divide heads ", o.heads));
  }
  if (GridSide(o.tokens) == 0) return invalid(absl::StrCat(o.tokens, " tokens are not a square grid"));
  if (o.input != "embedding" && o.input != "linear" && o.input != "mlp") {
    return invalid(absl::StrCat("input must be embedding, linear or mlp, not ", o.input));
  }
  return absl::OkStatus();
}

ArTransformer::ArTransformer(const TransformerOptions& o) : ModuleHolder(nullptr) {
  const absl::Status valid = ValidateTransformerOptions(o);
  TORCH_CHECK(valid.ok(), std::string(valid.message()));
  if (o.arch == "dd2") {
    impl_ = std::make_shared<Dd2TransformerImpl>(o);
  } else {
    impl_ = std::make_shared<LlamaGenTransformerImpl>(o);
  }
}

Dd2TransformerImpl::Dd2TransformerImpl(const TransformerOptions& o) : ArTransformerImpl(o) {
  class_embed_ = register_module("class_embed", nn::Embedding(o.classes + 1, o.width));
  pos_embed_ = register_module("pos_embed", nn::Embedding(o.tokens, o.width));
  token_in_ = register_module("token_in", nn::Linear(o.code_dim, o.width));
  for (int64_t l = 0; l < o.layers; ++l) {
    const std::string s = std::to_string(l);
    norm1_.push_back(register_module("norm1_" + s, nn::LayerNorm(nn::LayerNormOptions({o.width}))));
    norm2_.push_back(register_module("norm2_" + s, nn::LayerNorm(nn::LayerNormOptions({o.width}))));
    qkv_.push_back(register_module("qkv_" + s, nn::Linear(o.width, 3 * o.width)));
    proj_.push_back(register_module("proj_" + s, nn::Linear(o.width, o.width)));
    fc1_.push_back(register_module("fc1_" + s, nn::Linear(o.width, 4 * o.width)));
    fc2_.push_back(register_module("fc2_" + s, nn::Linear(4 * o.width, o.width)));
  }
  final_norm_ = register_module("final_norm", nn::LayerNorm(nn::LayerNormOptions({o.width})));
  head_ = register_module("head", nn::Linear(o.width, o.vocab));
}

torch::Tensor Dd2TransformerImpl::Embed(const torch::Tensor& classes, const torch::Tensor& prefix,
                                       int64_t offset) {
  // Sequence: [class, q_1 .. q_T]; positions offset .. offset + T.
  torch::Tensor x = class_embed_->forward(classes).unsqueeze(1);
  if (prefix.defined() && prefix.size(1) > 0) x = torch::cat({x, token_in_->forward(prefix)}, 1);
  auto pos = torch::arange(offset, offset + x.size(1), torch::TensorOptions(torch::kLong).device(x.device()));
  return x + pos_embed_->forward(pos).unsqueeze(0);
}

torch::Tensor Dd2TransformerImpl::Blocks(torch::Tensor x, KvCache* cache) {
  const int64_t b = x.size(0), t = x.size(1), h = options_.heads, dh = options_.width / h;
  // Query i (absolute past + i) sees keys 0 .. past + i; one query sees every key.
  const int64_t past = cache != nullptr && !cache->keys.empty() ? cache->keys[0].size(2) : 0;
  // Additive causal mask (-inf where key j lies after query i), added inside the score matmul.
  torch::Tensor mask;
  if (t > 1) mask = torch::full({t, past + t}, -std::numeric_limits<float>::infinity(), x.options()).triu(past + 1);
  for (size_t l = 0; l < qkv_.size(); ++l) {
    auto qkv = qkv_[l]->forward(norm1_[l]->forward(x)).view({b, t, 3, h, dh}).permute({2, 0, 3, 1, 4});
    auto q = qkv[0], k = qkv[1], v = qkv[2];                    // [B, H, t, dh]
    if (cache) {
      if (cache->keys.size() > l) {
        k = torch::cat({cache->keys[l], k}, 2);
        v = torch::cat({cache->values[l], v}, 2);
        cache->keys[l] = k;
        cache->values[l] = v;
      } else {
        cache->keys.push_back(k);
        cache->values.push_back(v);
      }
    }
    const int64_t keys = k.size(2);
    torch::Tensor att;  // [B, H, t, keys]
    if (t > 1) {
      att = torch::baddbmm(mask, q.reshape({b * h, t, dh}), k.transpose(-2, -1).reshape({b * h, dh, keys}),
                           /*beta=*/1.0, /*alpha=*/1.0 / std::sqrt(static_cast<double>(dh)))
                .view({b, h, t, keys});
    } else {
      att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(dh));
    }
    auto y = torch::matmul(att.softmax(-1), v).permute({0, 2, 1, 3}).reshape({b, t, options_.width});
    x = x + proj_[l]->forward(y);
    x = x + fc2_[l]->forward(torch::gelu(fc1_[l]->forward(norm2_[l]->forward(x))));
  }
  return final_norm_->forward(x);
}

torch::Tensor Dd2TransformerImpl::Hidden(const torch::Tensor& classes, const torch::Tensor& prefix) {
  return Blocks(Embed(classes, prefix, 0), nullptr);
}

torch::Tensor Dd2TransformerImpl::StepHidden(const torch::Tensor& classes, const torch::Tensor& token_vector,
                                             int64_t position, KvCache& cache) {
  torch::Tensor x = position == 0 ? class_embed_->forward(classes) : token_in_->forward(token_vector);
  x = (x + pos_embed_->weight[position]).unsqueeze(1);
  return Blocks(x, &cache).squeeze(1);
}

torch::Tensor TeacherLogProbsFor(ArTransformer& model, const torch::Tensor& classes,
                                 const torch::Tensor& prefix, const SamplingConfig& sampling) {
  if (sampling.cfg == 1.0) return TeacherLogProbs(model->forward(classes, prefix), torch::Tensor(), sampling);
  const int64_t b = classes.size(0);
  auto both = torch::cat({classes, torch::full_like(classes, model->options().classes)});
  auto logits = model->forward(both, torch::cat({prefix, prefix}));
  return TeacherLogProbs(logits.slice(0, 0, b), logits.slice(0, b), sampling);
}

torch::Tensor SampleAr(ArTransformer& model, const torch::Tensor& codebook, const torch::Tensor& classes,
                       const SamplingConfig& sampling, at::Generator& generator, bool use_cache) {
  torch::NoGradGuard no_grad;
  const int64_t b = classes.size(0), n = model->options().tokens;
  const bool guided = sampling.cfg != 1.0;
  auto batch_classes = guided ? torch::cat({classes, torch::full_like(classes, model->options().classes)}) : classes;
  KvCache cache;
  std::vector<torch::Tensor> picked;
  torch::Tensor prev;  // [B', C] vectors of the last token, for the cached path
  for (int64_t i = 0; i < n; ++i) {
    torch::Tensor logits;
    if (use_cache) {
      logits = model->Step(batch_classes, prev, i, cache);
    } else {
      torch::Tensor prefix;
      if (i > 0) {
        auto idx = torch::stack(picked, 1);                                   // [B, i]
        prefix = codebook.index_select(0, idx.view(-1)).view({b, i, codebook.size(1)});
        if (guided) prefix = torch::cat({prefix, prefix});
      }
      logits = model->forward(batch_classes, prefix).select(1, i);
    }
    auto log_p = guided ? TeacherLogProbs(logits.slice(0, 0, b), logits.slice(0, b), sampling)
                        : TeacherLogProbs(logits, torch::Tensor(), sampling);
    // Drawn on the CPU (the generator's device): the same tokens on any device.
    auto idx = torch::multinomial(log_p.exp().cpu(), 1, /*replacement=*/false, generator).squeeze(1).to(log_p.device());
    picked.push_back(idx);
    prev = codebook.index_select(0, idx);
    if (guided) prev = torch::cat({prev, prev});
  }
  return torch::stack(picked, 1);
}

// ---------------------------------------------------------------- FeatureNet

FeatureNetImpl::FeatureNetImpl() {
  body_ = register_module("body", nn::Sequential(
      nn::Conv2d(nn::Conv2dOptions(1, 32, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
      nn::Conv2d(nn::Conv2dOptions(32, 64, 3).padding(1)), nn::ReLU(), nn::MaxPool2d(2),
      nn::Flatten(), nn::Linear(64 * 7 * 7, 128), nn::ReLU()));
  out_ = register_module("out", nn::Linear(128, 10));
}

torch::Tensor FeatureNetImpl::Features(const torch::Tensor& images) { return body_->forward(images); }

torch::Tensor FeatureNetImpl::Classify(const torch::Tensor& features) { return out_->forward(features); }

torch::Tensor FeatureNetImpl::forward(const torch::Tensor& images) { return Classify(Features(images)); }

}  // namespace dd2
