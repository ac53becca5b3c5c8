#include "training/llamagen.h"

#include <cmath>
#include <limits>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace dd2 {

namespace nn = torch::nn;

namespace {

std::string Shape(const torch::Tensor& t) { return absl::StrCat("[", absl::StrJoin(t.sizes(), ", "), "]"); }

absl::StatusOr<torch::Tensor> Entry(const std::string& file, const TensorDict& state, const std::string& key,
                                    int64_t dims) {
  auto it = state.find(key);
  if (it == state.end()) return absl::InvalidArgumentError(absl::StrCat(file, ": missing key ", key));
  if (it->second.dim() != dims) {
    return absl::InvalidArgumentError(
        absl::StrCat(file, ": key ", key, " has shape ", Shape(it->second), ", expected ", dims, " dimensions"));
  }
  return it->second;
}

int64_t CountIndexed(const TensorDict& state, const std::string& prefix, const std::string& suffix) {
  int64_t n = 0;
  while (state.count(absl::StrCat(prefix, n, suffix)) > 0) ++n;
  return n;
}

// torch.nn.Linear's default would differ from LlamaGen's: normal(0, 0.02) weights, no biases.
nn::Linear Dense(int64_t in, int64_t out) {
  nn::Linear l(nn::LinearOptions(in, out).bias(false));
  torch::NoGradGuard no_grad;
  l->weight.normal_(0, 0.02);
  return l;
}

// dd2's input layers on token vectors: with a bias, unlike LlamaGen's own layers. The adapted
// MLP fits LlamaGen's token table 5x closer with them (0.58% against 3.0% at adapt's defaults),
// and a generator reading symmetric noise gets keys that are not odd functions of it.
nn::Linear BiasedDense(int64_t in, int64_t out) {
  nn::Linear l(nn::LinearOptions(in, out));
  torch::NoGradGuard no_grad;
  l->weight.normal_(0, 0.02);
  l->bias.zero_();
  return l;
}

}  // namespace

// ---------------------------------------------------------------- GPT

namespace {

// RMSNorm in float32, scaled by `weight` (LlamaGen's RMSNorm).
torch::Tensor RmsNorm(const torch::Tensor& x, const torch::Tensor& weight, double eps) {
  auto f = x.to(torch::kFloat32);
  return (f * torch::rsqrt(f.pow(2).mean(-1, /*keepdim=*/true) + eps)).to(x.scalar_type()) * weight;
}

}  // namespace

class LlamaGenNormImpl : public nn::Module {
 public:
  explicit LlamaGenNormImpl(int64_t dim) { weight = register_parameter("weight", torch::ones({dim})); }
  torch::Tensor weight;
};

class LlamaGenAttentionImpl : public nn::Module {
 public:
  LlamaGenAttentionImpl(int64_t dim, int64_t kv_dim) {
    wqkv = register_module("wqkv", Dense(dim, dim + 2 * kv_dim));
    wo = register_module("wo", Dense(dim, dim));
  }
  nn::Linear wqkv{nullptr}, wo{nullptr};
};

class LlamaGenFeedForwardImpl : public nn::Module {
 public:
  LlamaGenFeedForwardImpl(int64_t dim, int64_t hidden) {
    w1 = register_module("w1", Dense(dim, hidden));
    w3 = register_module("w3", Dense(dim, hidden));
    w2 = register_module("w2", Dense(hidden, dim));
  }
  nn::Linear w1{nullptr}, w2{nullptr}, w3{nullptr};
};

class LlamaGenBlockImpl : public nn::Module {
 public:
  explicit LlamaGenBlockImpl(const TransformerOptions& o)
      : heads_(o.heads), kv_heads_(o.kv_heads), head_dim_(o.width / o.heads), eps_(o.norm_eps) {
    attention = register_module("attention", std::make_shared<LlamaGenAttentionImpl>(o.width, o.kv_heads * head_dim_));
    feed_forward = register_module("feed_forward", std::make_shared<LlamaGenFeedForwardImpl>(o.width, o.ffn_hidden));
    attention_norm = register_module("attention_norm", std::make_shared<LlamaGenNormImpl>(o.width));
    ffn_norm = register_module("ffn_norm", std::make_shared<LlamaGenNormImpl>(o.width));
  }

  // x [B, t, width]; cos/sin [t, head_dim / 2]; mask [t, keys] or undefined (t == 1).
  torch::Tensor forward(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                        const torch::Tensor& mask, KvCache* cache, size_t layer) {
    const int64_t b = x.size(0), t = x.size(1), dim = heads_ * head_dim_, kv = kv_heads_ * head_dim_;
    auto parts = attention->wqkv->forward(RmsNorm(x, attention_norm->weight, eps_)).split_with_sizes({dim, kv, kv}, -1);
    auto q = Rotate(parts[0].view({b, t, heads_, head_dim_}), cos, sin).transpose(1, 2);     // [B, H, t, Dh]
    auto k = Rotate(parts[1].view({b, t, kv_heads_, head_dim_}), cos, sin).transpose(1, 2);  // [B, K, t, Dh]
    auto v = parts[2].view({b, t, kv_heads_, head_dim_}).transpose(1, 2);
    if (cache != nullptr) {
      if (cache->keys.size() > layer) {
        k = cache->keys[layer] = torch::cat({cache->keys[layer], k}, 2);
        v = cache->values[layer] = torch::cat({cache->values[layer], v}, 2);
      } else {
        cache->keys.push_back(k);
        cache->values.push_back(v);
      }
    }
    if (kv_heads_ < heads_) {
      k = k.repeat_interleave(heads_ / kv_heads_, 1);
      v = v.repeat_interleave(heads_ / kv_heads_, 1);
    }
    auto att = torch::matmul(q, k.transpose(-2, -1)) / std::sqrt(static_cast<double>(head_dim_));
    if (mask.defined()) att = att + mask;
    auto y = torch::matmul(att.softmax(-1), v).transpose(1, 2).reshape({b, t, dim});
    auto h = x + attention->wo->forward(y);
    auto n = RmsNorm(h, ffn_norm->weight, eps_);
    auto& ff = *feed_forward;
    return h + ff.w2->forward(torch::silu(ff.w1->forward(n)) * ff.w3->forward(n));
  }

  std::shared_ptr<LlamaGenAttentionImpl> attention;
  std::shared_ptr<LlamaGenFeedForwardImpl> feed_forward;
  std::shared_ptr<LlamaGenNormImpl> attention_norm, ffn_norm;

 private:
  // Pairs (x[2j], x[2j+1]) rotated by angle j: x [B, t, heads, Dh], cos/sin [t, Dh / 2].
  static torch::Tensor Rotate(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin) {
    auto pairs = x.view({x.size(0), x.size(1), x.size(2), x.size(3) / 2, 2});
    auto a = pairs.select(-1, 0), b = pairs.select(-1, 1);
    auto c = cos.view({1, cos.size(0), 1, cos.size(1)}), s = sin.view({1, sin.size(0), 1, sin.size(1)});
    return torch::stack({a * c - b * s, b * c + a * s}, -1).flatten(3);
  }

  int64_t heads_, kv_heads_, head_dim_;
  double eps_;
};

absl::StatusOr<TransformerOptions> LlamaGenPreset(const std::string& name) {
  struct Size {
    const char* name;
    int64_t width, layers, heads;
  };
  static const Size kSizes[] = {{"B", 768, 12, 12}, {"L", 1024, 24, 16}, {"XL", 1280, 36, 20},
                                {"XXL", 1536, 48, 24}, {"XXXL", 2560, 48, 40}};
  for (const Size& s : kSizes) {
    if (name == s.name || name == absl::StrCat("GPT-", s.name)) {
      TransformerOptions o;
      o.arch = "llamagen";
      o.width = s.width;
      o.layers = s.layers;
      o.heads = s.heads;
      o.kv_heads = s.heads;
      o.vocab = 16384;
      o.tokens = 256;
      o.classes = 1000;
      o.input = "embedding";
      return o;
    }
  }
  return absl::NotFoundError(absl::StrCat("no LlamaGen preset '", name, "' (B, L, XL, XXL, XXXL)"));
}

absl::StatusOr<TransformerOptions> LlamaGenOptionsFromStateDict(const std::string& file, const TensorDict& state,
                                                                const TransformerOptions& given) {
  TransformerOptions o = given;
  o.arch = "llamagen";
  o.input = "embedding";
  auto tok = Entry(file, state, "tok_embeddings.weight", 2);
  if (!tok.ok()) return tok.status();
  auto cls = Entry(file, state, "cls_embedding.embedding_table.weight", 2);
  if (!cls.ok()) return cls.status();
  auto qkv = Entry(file, state, "layers.0.attention.wqkv.weight", 2);
  if (!qkv.ok()) return qkv.status();
  auto w1 = Entry(file, state, "layers.0.feed_forward.w1.weight", 2);
  if (!w1.ok()) return w1.status();
  o.vocab = tok->size(0);
  o.width = tok->size(1);
  o.classes = cls->size(0) - 1;
  o.layers = CountIndexed(state, "layers.", ".attention.wqkv.weight");
  o.ffn_hidden = w1->size(0);
  if (o.heads <= 0 || o.width % o.heads != 0 || (o.width / o.heads) % 4 != 0) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": width ", o.width, " (tok_embeddings.weight) is not ",
                                                   o.heads, " heads of a multiple of 4: give the right heads"));
  }
  const int64_t head_dim = o.width / o.heads, kv_rows = qkv->size(0) - o.width;
  if (kv_rows <= 0 || kv_rows % (2 * head_dim) != 0 || o.heads % (kv_rows / (2 * head_dim)) != 0) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": key layers.0.attention.wqkv.weight has shape ",
                                                   Shape(*qkv), ", which no key/value head count fits with ",
                                                   o.heads, " heads of ", head_dim));
  }
  o.kv_heads = kv_rows / (2 * head_dim);
  if (auto st = ValidateTransformerOptions(o); !st.ok()) return absl::InvalidArgumentError(absl::StrCat(file, ": ", st.message()));
  return o;
}

absl::Status LoadStateDict(const std::string& file, const TensorDict& state, nn::Module& module,
                           const std::set<std::string>& ignored) {
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> wanted;
  for (const auto& p : module.named_parameters()) wanted[p.key()] = p.value();
  for (const auto& b : module.named_buffers()) wanted[b.key()] = b.value();
  for (const auto& [key, value] : wanted) {
    if (key.rfind("dd2_", 0) == 0) continue;
    auto it = state.find(key);
    if (it == state.end()) return absl::InvalidArgumentError(absl::StrCat(file, ": missing key ", key));
    if (!it->second.sizes().equals(value.sizes())) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": key ", key, " has shape ", Shape(it->second),
                                                     ", the model wants ", Shape(value)));
    }
  }
  for (const auto& [key, value] : state) {
    if (wanted.count(key) == 0 && ignored.count(key) == 0) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": unexpected key ", key, " ", Shape(value)));
    }
  }
  for (auto& [key, value] : wanted) {
    if (key.rfind("dd2_", 0) != 0) value.copy_(state.at(key));
  }
  return absl::OkStatus();
}

LlamaGenTransformerImpl::LlamaGenTransformerImpl(const TransformerOptions& given) : ArTransformerImpl(given) {
  TransformerOptions& o = options_;
  if (o.kv_heads <= 0) o.kv_heads = o.heads;
  if (o.ffn_hidden <= 0) o.ffn_hidden = (8 * o.width / 3 + 255) / 256 * 256;  // find_multiple(int(2*4*dim/3), 256)
  const absl::Status valid = ValidateTransformerOptions(o);
  TORCH_CHECK(valid.ok(), std::string(valid.message()));
  const int64_t grid = GridSide(o.tokens);
  auto table = std::make_shared<nn::Module>();
  cls_table_ = table->register_module("embedding_table", nn::Embedding(o.classes + 1, o.width));
  register_module("cls_embedding", table);
  if (o.input == "embedding") {
    tok_embeddings_ = register_module("tok_embeddings", nn::Embedding(o.vocab, o.width));
    codebook_ = register_buffer("dd2_codebook", torch::zeros({o.vocab, o.code_dim}));
  } else if (o.input == "linear") {
    token_in_ = register_module("dd2_token_in", nn::Sequential(BiasedDense(o.code_dim, o.width)));
  } else {
    const int64_t hidden = o.input_hidden > 0 ? o.input_hidden : 4 * o.width;
    token_in_ = register_module("dd2_token_in", nn::Sequential(BiasedDense(o.code_dim, hidden), nn::SiLU(), BiasedDense(hidden, o.width)));
  }
  auto layers = register_module("layers", nn::ModuleList());
  for (int64_t l = 0; l < o.layers; ++l) {
    blocks_.push_back(std::make_shared<LlamaGenBlockImpl>(o));
    layers->push_back(blocks_.back());
  }
  norm_weight_ = register_module("norm", std::make_shared<LlamaGenNormImpl>(o.width))->weight;
  output_ = register_module("output", Dense(o.width, o.vocab));
  {
    torch::NoGradGuard no_grad;
    cls_table_->weight.normal_(0, 0.02);
    if (tok_embeddings_) tok_embeddings_->weight.normal_(0, 0.02);
    output_->weight.zero_();  // as LlamaGen initialises its output layer
  }
  // 2D rotary angles: row 0 (the class) zero; token j at grid (r, c) = (j / G, j % G) uses
  // [f_0 r .. f_{q-1} r, f_0 c .. f_{q-1} c], f_m = base^(-2m / half), half = head_dim / 2, q = half / 2.
  const int64_t half = o.width / o.heads / 2, quarter = half / 2;
  auto freqs = torch::pow(o.rope_base, -torch::arange(0, half, 2, torch::kFloat64).slice(0, 0, quarter) / half);
  auto pos = torch::arange(o.tokens, torch::kFloat64);
  auto rows = torch::outer(torch::div(pos, grid, "floor"), freqs), cols = torch::outer(torch::fmod(pos, grid), freqs);
  auto angles = torch::cat({torch::zeros({1, half}, torch::kFloat64), torch::cat({rows, cols}, 1)});
  rope_cos_ = angles.cos().to(torch::kFloat32);
  rope_sin_ = angles.sin().to(torch::kFloat32);
  rope_cos_[0].zero_();
  rope_sin_[0].zero_();
}

void LlamaGenTransformerImpl::SetCodebook(const torch::Tensor& codebook) {
  TORCH_CHECK(codebook_.defined(), "SetCodebook: only a LlamaGen teacher with input 'embedding' snaps to a codebook");
  TORCH_CHECK(codebook.sizes().equals(codebook_.sizes()), "SetCodebook: the codebook is [", codebook.size(0), ", ",
              codebook.size(1), "], the teacher reads [", codebook_.size(0), ", ", codebook_.size(1), "]");
  torch::NoGradGuard no_grad;
  codebook_.copy_(codebook);
}

std::pair<torch::Tensor, torch::Tensor> LlamaGenTransformerImpl::Rope(int64_t from, int64_t count,
                                                                      const torch::Device& device) {
  TORCH_CHECK(from + count <= rope_cos_.size(0), "LlamaGen: position ", from + count - 1, " is past the ",
              options_.tokens, " tokens");
  if (rope_cos_.device() != device) {
    rope_cos_ = rope_cos_.to(device);
    rope_sin_ = rope_sin_.to(device);
  }
  return {rope_cos_.slice(0, from, from + count), rope_sin_.slice(0, from, from + count)};
}

torch::Tensor LlamaGenTransformerImpl::Classes(const torch::Tensor& classes) {
  return cls_table_->forward(classes).unsqueeze(1);
}

torch::Tensor LlamaGenTransformerImpl::EmbedVectors(const torch::Tensor& vectors) {
  if (token_in_) return token_in_->forward(vectors);
  if (!codebook_seen_) {  // once, not a host sync per sampling step
    TORCH_CHECK(codebook_.abs().sum().item<double>() > 0,
                "a LlamaGen teacher with input 'embedding' needs its codebook (SetCodebook) to read token vectors");
    codebook_seen_ = true;
  }
  return tok_embeddings_->forward(torch::matmul(vectors, codebook_.t()).argmax(-1));
}

torch::Tensor LlamaGenTransformerImpl::Blocks(torch::Tensor x, KvCache* cache) {
  const int64_t t = x.size(1);
  const int64_t past = cache != nullptr && !cache->keys.empty() ? cache->keys[0].size(2) : 0;
  auto [cos, sin] = Rope(past, t, x.device());
  torch::Tensor mask;
  if (t > 1) mask = torch::full({t, past + t}, -std::numeric_limits<float>::infinity(), x.options()).triu(past + 1);
  for (size_t l = 0; l < blocks_.size(); ++l) x = blocks_[l]->forward(x, cos, sin, mask, cache, l);
  return RmsNorm(x, norm_weight_, options_.norm_eps);
}

torch::Tensor LlamaGenTransformerImpl::Hidden(const torch::Tensor& classes, const torch::Tensor& prefix) {
  torch::Tensor x = Classes(classes);
  if (prefix.defined() && prefix.size(1) > 0) x = torch::cat({x, EmbedVectors(prefix)}, 1);
  return Blocks(x, nullptr);
}

torch::Tensor LlamaGenTransformerImpl::StepHidden(const torch::Tensor& classes, const torch::Tensor& token_vector,
                                                  int64_t position, KvCache& cache) {
  auto x = position == 0 ? Classes(classes) : EmbedVectors(token_vector.unsqueeze(1));
  return Blocks(x, &cache).squeeze(1);
}

torch::Tensor LlamaGenTransformerImpl::TokenLogits(const torch::Tensor& classes, const torch::Tensor& ids) {
  TORCH_CHECK(tok_embeddings_, "TokenLogits needs LlamaGen's token table (input 'embedding')");
  torch::Tensor x = Classes(classes);
  if (ids.size(1) > 0) x = torch::cat({x, tok_embeddings_->forward(ids)}, 1);
  return Output(Blocks(x, nullptr));
}

torch::Tensor LlamaGenTransformerImpl::TokenStep(const torch::Tensor& classes, const torch::Tensor& id,
                                                 int64_t position, KvCache& cache) {
  TORCH_CHECK(tok_embeddings_, "TokenStep needs LlamaGen's token table (input 'embedding')");
  auto x = position == 0 ? Classes(classes) : tok_embeddings_->forward(id).unsqueeze(1);
  return Output(Blocks(x, &cache).squeeze(1));
}

// ---------------------------------------------------------------- VQ

namespace {

nn::GroupNorm Normalize(int64_t channels) { return nn::GroupNorm(nn::GroupNormOptions(32, channels).eps(1e-6)); }
nn::Conv2d Conv(int64_t in, int64_t out, int64_t kernel, int64_t stride = 1) {
  return nn::Conv2d(nn::Conv2dOptions(in, out, kernel).stride(stride).padding(kernel == 3 && stride == 1 ? 1 : 0));
}
torch::Tensor Swish(const torch::Tensor& x) { return x * torch::sigmoid(x); }

}  // namespace

class VqResBlockImpl : public nn::Module {
 public:
  VqResBlockImpl(int64_t in, int64_t out) {
    norm1 = register_module("norm1", Normalize(in));
    conv1 = register_module("conv1", Conv(in, out, 3));
    norm2 = register_module("norm2", Normalize(out));
    conv2 = register_module("conv2", Conv(out, out, 3));
    if (in != out) nin_shortcut = register_module("nin_shortcut", Conv(in, out, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv1->forward(Swish(norm1->forward(x)));
    h = conv2->forward(Swish(norm2->forward(h)));
    return (nin_shortcut ? nin_shortcut->forward(x) : x) + h;
  }
  nn::GroupNorm norm1{nullptr}, norm2{nullptr};
  nn::Conv2d conv1{nullptr}, conv2{nullptr}, nin_shortcut{nullptr};
};

// One head over the h * w positions, scale 1/sqrt(channels), residual.
class VqAttnBlockImpl : public nn::Module {
 public:
  explicit VqAttnBlockImpl(int64_t c) {
    norm = register_module("norm", Normalize(c));
    q = register_module("q", Conv(c, c, 1));
    k = register_module("k", Conv(c, c, 1));
    v = register_module("v", Conv(c, c, 1));
    proj_out = register_module("proj_out", Conv(c, c, 1));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = norm->forward(x);
    const int64_t b = x.size(0), c = x.size(1), n = x.size(2) * x.size(3);
    auto qq = q->forward(h).reshape({b, c, n}).transpose(1, 2);  // [B, n, c]
    auto kk = k->forward(h).reshape({b, c, n});                  // [B, c, n]
    auto vv = v->forward(h).reshape({b, c, n});
    auto w = (torch::bmm(qq, kk) / std::sqrt(static_cast<double>(c))).softmax(2);  // [B, n(query), n(key)]
    auto out = torch::bmm(vv, w.transpose(1, 2)).reshape(x.sizes());
    return x + proj_out->forward(out);
  }
  nn::GroupNorm norm{nullptr};
  nn::Conv2d q{nullptr}, k{nullptr}, v{nullptr}, proj_out{nullptr};
};

// Downsample: pad right and bottom by 1, 3x3 stride 2. Upsample: nearest x2, 3x3.
class VqResampleImpl : public nn::Module {
 public:
  VqResampleImpl(int64_t c, bool up) : up_(up) { conv = register_module("conv", Conv(c, c, 3, up ? 1 : 2)); }
  torch::Tensor forward(const torch::Tensor& x) {
    if (up_) {
      return conv->forward(torch::nn::functional::interpolate(
          x, torch::nn::functional::InterpolateFuncOptions().scale_factor(std::vector<double>{2.0, 2.0}).mode(torch::kNearest)));
    }
    return conv->forward(torch::constant_pad_nd(x, {0, 1, 0, 1}, 0));
  }
  nn::Conv2d conv{nullptr};

 private:
  bool up_;
};

// One resolution level: residual blocks, attention blocks after them where there are any, a resampler.
class VqLevelImpl : public nn::Module {
 public:
  VqLevelImpl(int64_t in, int64_t out, int64_t blocks, bool attention, int resample /* -1 down, 1 up, 0 none */) {
    auto r = register_module("res", nn::ModuleList());
    auto a = register_module("attn", nn::ModuleList());
    for (int64_t i = 0; i < blocks; ++i) {
      res.push_back(std::make_shared<VqResBlockImpl>(i == 0 ? in : out, out));
      r->push_back(res.back());
      if (attention) {
        attn.push_back(std::make_shared<VqAttnBlockImpl>(out));
        a->push_back(attn.back());
      }
    }
    if (resample != 0) {
      resampler = register_module(resample < 0 ? "downsample" : "upsample", std::make_shared<VqResampleImpl>(out, resample > 0));
    }
  }
  torch::Tensor forward(torch::Tensor h) {
    for (size_t i = 0; i < res.size(); ++i) {
      h = res[i]->forward(h);
      if (!attn.empty()) h = attn[i]->forward(h);
    }
    return resampler ? resampler->forward(h) : h;
  }
  std::vector<std::shared_ptr<VqResBlockImpl>> res;
  std::vector<std::shared_ptr<VqAttnBlockImpl>> attn;
  std::shared_ptr<VqResampleImpl> resampler;
};

// The middle of the encoder and the decoder: res, attn, res.
class VqMiddle {
 public:
  VqMiddle(nn::Module& owner, int64_t c) {
    auto list = owner.register_module("mid", nn::ModuleList());
    first = std::make_shared<VqResBlockImpl>(c, c);
    attn = std::make_shared<VqAttnBlockImpl>(c);
    second = std::make_shared<VqResBlockImpl>(c, c);
    list->push_back(first);
    list->push_back(attn);
    list->push_back(second);
  }
  torch::Tensor forward(const torch::Tensor& h) { return second->forward(attn->forward(first->forward(h))); }
  std::shared_ptr<VqResBlockImpl> first, second;
  std::shared_ptr<VqAttnBlockImpl> attn;
};

class LlamaGenVqEncoderImpl : public nn::Module {
 public:
  explicit LlamaGenVqEncoderImpl(const LlamaGenVqOptions& o) {
    conv_in = register_module("conv_in", Conv(3, o.channels, 3));
    auto list = register_module("conv_blocks", nn::ModuleList());
    const size_t levels = o.channel_mult.size();
    int64_t in = o.channels;
    for (size_t i = 0; i < levels; ++i) {
      const int64_t out = o.channels * o.channel_mult[i];
      levels_.push_back(std::make_shared<VqLevelImpl>(in, out, o.res_blocks, i + 1 == levels, i + 1 == levels ? 0 : -1));
      list->push_back(levels_.back());
      in = out;
    }
    mid_ = std::make_unique<VqMiddle>(*this, in);
    norm_out = register_module("norm_out", Normalize(in));
    conv_out = register_module("conv_out", Conv(in, o.z_channels, 3));
  }
  torch::Tensor forward(const torch::Tensor& x) {
    auto h = conv_in->forward(x);
    for (auto& level : levels_) h = level->forward(h);
    h = mid_->forward(h);
    return conv_out->forward(Swish(norm_out->forward(h)));
  }
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  nn::GroupNorm norm_out{nullptr};

 private:
  std::vector<std::shared_ptr<VqLevelImpl>> levels_;
  std::unique_ptr<VqMiddle> mid_;
};

class LlamaGenVqDecoderImpl : public nn::Module {
 public:
  explicit LlamaGenVqDecoderImpl(const LlamaGenVqOptions& o) {
    int64_t in = o.channels * o.channel_mult.back();
    conv_in = register_module("conv_in", Conv(o.z_channels, in, 3));
    mid_ = std::make_unique<VqMiddle>(*this, in);
    auto list = register_module("conv_blocks", nn::ModuleList());
    const size_t levels = o.channel_mult.size();
    for (size_t i = 0; i < levels; ++i) {
      const int64_t out = o.channels * o.channel_mult[levels - 1 - i];
      levels_.push_back(std::make_shared<VqLevelImpl>(in, out, o.res_blocks + 1, i == 0, i + 1 == levels ? 0 : 1));
      list->push_back(levels_.back());
      in = out;
    }
    norm_out = register_module("norm_out", Normalize(in));
    conv_out = register_module("conv_out", Conv(in, 3, 3));
  }
  torch::Tensor forward(const torch::Tensor& z) {
    auto h = mid_->forward(conv_in->forward(z));
    for (auto& level : levels_) h = level->forward(h);
    return conv_out->forward(Swish(norm_out->forward(h)));
  }
  nn::Conv2d conv_in{nullptr}, conv_out{nullptr};
  nn::GroupNorm norm_out{nullptr};

 private:
  std::unique_ptr<VqMiddle> mid_;
  std::vector<std::shared_ptr<VqLevelImpl>> levels_;
};

absl::StatusOr<LlamaGenVqOptions> LlamaGenVqOptionsFromStateDict(const std::string& file, const TensorDict& state) {
  LlamaGenVqOptions o;
  auto conv_in = Entry(file, state, "encoder.conv_in.weight", 4);
  if (!conv_in.ok()) return conv_in.status();
  auto conv_out = Entry(file, state, "encoder.conv_out.weight", 4);
  if (!conv_out.ok()) return conv_out.status();
  auto codebook = Entry(file, state, "quantize.embedding.weight", 2);
  if (!codebook.ok()) return codebook.status();
  o.channels = conv_in->size(0);
  o.z_channels = conv_out->size(0);
  o.codebook_size = codebook->size(0);
  o.code_dim = codebook->size(1);
  const int64_t levels = CountIndexed(state, "encoder.conv_blocks.", ".res.0.conv1.weight");
  o.res_blocks = CountIndexed(state, "encoder.conv_blocks.0.res.", ".conv1.weight");
  if (levels == 0 || o.res_blocks == 0) {
    return absl::InvalidArgumentError(absl::StrCat(file, ": missing key encoder.conv_blocks.0.res.0.conv1.weight"));
  }
  o.channel_mult.clear();
  for (int64_t i = 0; i < levels; ++i) {
    auto w = Entry(file, state, absl::StrCat("encoder.conv_blocks.", i, ".res.0.conv1.weight"), 4);
    if (!w.ok()) return w.status();
    o.channel_mult.push_back(w->size(0) / o.channels);
  }
  for (int64_t c : o.channel_mult) {
    if ((o.channels * c) % 32 != 0) {
      return absl::InvalidArgumentError(absl::StrCat(file, ": ", o.channels * c, " channels do not make 32 groups"));
    }
  }
  return o;
}

LlamaGenVqImpl::LlamaGenVqImpl(const LlamaGenVqOptions& o) : options_(o) {
  encoder_ = register_module("encoder", std::make_shared<LlamaGenVqEncoderImpl>(o));
  decoder_ = register_module("decoder", std::make_shared<LlamaGenVqDecoderImpl>(o));
  auto quantize = std::make_shared<nn::Module>();
  codebook_ = quantize->register_module("embedding", nn::Embedding(o.codebook_size, o.code_dim));
  register_module("quantize", quantize);
  quant_conv_ = register_module("quant_conv", Conv(o.z_channels, o.code_dim, 1));
  post_quant_conv_ = register_module("post_quant_conv", Conv(o.code_dim, o.z_channels, 1));
}

torch::Tensor LlamaGenVqImpl::Codebook() { return torch::nn::functional::normalize(codebook_->weight, torch::nn::functional::NormalizeFuncOptions().dim(-1)); }

torch::Tensor LlamaGenVqImpl::Encode(const torch::Tensor& images) {
  auto h = quant_conv_->forward(encoder_->forward(images));  // [B, C, h, w]
  auto z = h.flatten(2).transpose(1, 2);                        // [B, n, C]
  return torch::nn::functional::normalize(z, torch::nn::functional::NormalizeFuncOptions().dim(-1));
}

torch::Tensor LlamaGenVqImpl::Quantize(const torch::Tensor& latents) {
  auto e = Codebook();
  auto flat = latents.reshape({-1, latents.size(-1)});
  auto d = flat.pow(2).sum(1, true) + e.pow(2).sum(1) - 2 * torch::matmul(flat, e.t());
  return d.argmin(1).view({latents.size(0), latents.size(1)});
}

torch::Tensor LlamaGenVqImpl::Decode(const torch::Tensor& vectors) {
  const int64_t b = vectors.size(0), n = vectors.size(1), c = vectors.size(2);
  const int64_t g = GridSide(n);
  TORCH_CHECK(g > 0, "LlamaGen VQ: ", n, " tokens are not a square grid");
  auto z = vectors.transpose(1, 2).reshape({b, c, g, g});
  return decoder_->forward(post_quant_conv_->forward(z));
}

torch::Tensor LlamaGenVqImpl::DecodeCodes(const torch::Tensor& codes) {
  auto e = Codebook();
  return Decode(e.index_select(0, codes.reshape(-1)).view({codes.size(0), codes.size(1), e.size(1)}));
}

}  // namespace dd2
