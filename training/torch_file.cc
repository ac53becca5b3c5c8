#include "training/torch_file.h"

#include <caffe2/serialize/inline_container.h>

#include <cstring>
#include <memory>
#include <unordered_map>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace dd2 {
namespace {

// A Python value as far as a state dict needs one.
struct PyValue;
using PyRef = std::shared_ptr<PyValue>;
struct PyValue {
  enum Kind { kNone, kBool, kInt, kFloat, kString, kTuple, kList, kDict, kGlobal, kStorage, kTensor, kObject };
  Kind kind = kNone;
  int64_t i = 0;
  double f = 0;
  std::string s;               // string; global "module.name"; an object's class
  std::vector<PyRef> items;    // tuple, list; dict as key, value, key, value, ...
  torch::Tensor tensor;        // storage (1-D) or tensor
};

PyRef Make(PyValue::Kind kind) {
  auto v = std::make_shared<PyValue>();
  v->kind = kind;
  return v;
}

torch::ScalarType StorageDtype(const std::string& global, bool* ok) {
  static const std::unordered_map<std::string, torch::ScalarType> kTypes = {
      {"torch.FloatStorage", torch::kFloat32}, {"torch.DoubleStorage", torch::kFloat64},
      {"torch.HalfStorage", torch::kFloat16},  {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kInt64},    {"torch.IntStorage", torch::kInt32},
      {"torch.ShortStorage", torch::kInt16},   {"torch.CharStorage", torch::kInt8},
      {"torch.ByteStorage", torch::kUInt8},    {"torch.BoolStorage", torch::kBool}};
  auto it = kTypes.find(global);
  *ok = it != kTypes.end();
  return *ok ? it->second : torch::kFloat32;
}

class Unpickler {
 public:
  Unpickler(const std::string& what, const std::string& data, const StorageReader& storage)
      : what_(what), data_(data), storage_(storage) {}

  absl::StatusOr<PyRef> Run() {
    while (true) {
      if (pos_ >= data_.size()) return Error("the pickle ends before its STOP");
      op_at_ = pos_;
      const uint8_t op = static_cast<uint8_t>(data_[pos_++]);
      absl::Status st = Step(op);
      if (!st.ok()) return st;
      if (done_) {
        if (stack_.size() != 1) return Error("STOP with more than one value on the stack");
        return stack_.back();
      }
    }
  }

 private:
  absl::Status Error(const std::string& what) const {
    return absl::InvalidArgumentError(absl::StrFormat("%s: data.pkl byte %d: %s", what_, op_at_, what));
  }

  bool Need(size_t n) const { return data_.size() - pos_ >= n; }
  uint64_t ReadLe(size_t n) {
    uint64_t v = 0;
    for (size_t k = 0; k < n; ++k) v |= static_cast<uint64_t>(static_cast<uint8_t>(data_[pos_ + k])) << (8 * k);
    pos_ += n;
    return v;
  }

  absl::StatusOr<PyRef> Pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() <= marks_.back())) return Error("stack underflow");
    PyRef v = stack_.back();
    stack_.pop_back();
    return v;
  }
  absl::StatusOr<std::vector<PyRef>> PopToMark() {
    if (marks_.empty()) return Error("no MARK on the stack");
    std::vector<PyRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(marks_.back()), stack_.end());
    stack_.resize(marks_.back());
    marks_.pop_back();
    return items;
  }
  absl::Status Push(PyRef v) {
    if (stack_.size() > kMaxStack) return Error("the stack grows past 1,000,000 values");
    stack_.push_back(std::move(v));
    return absl::OkStatus();
  }
  absl::Status PushString(size_t length_bytes) {
    if (!Need(length_bytes)) return Error("truncated string length");
    const uint64_t n = ReadLe(length_bytes);
    if (!Need(n)) return Error("a string runs past the end of the pickle");
    auto v = Make(PyValue::kString);
    v->s = data_.substr(pos_, n);
    pos_ += n;
    return Push(v);
  }
  absl::Status PushInt(int64_t i) {
    auto v = Make(PyValue::kInt);
    v->i = i;
    return Push(v);
  }
  absl::Status PushTuple(size_t n) {
    if (stack_.size() < n + (marks_.empty() ? 0 : marks_.back())) return Error("stack underflow");
    auto t = Make(PyValue::kTuple);
    t->items.assign(stack_.end() - static_cast<std::ptrdiff_t>(n), stack_.end());
    stack_.resize(stack_.size() - n);
    return Push(t);
  }
  absl::Status PushGlobal(const std::string& module, const std::string& name) {
    auto v = Make(PyValue::kGlobal);
    v->s = module + "." + name;
    return Push(v);
  }
  absl::Status Memo(uint64_t key) {
    if (stack_.empty()) return Error("memoize with an empty stack");
    if (memo_.size() > kMaxStack) return Error("too many memo entries");
    memo_[key] = stack_.back();
    return absl::OkStatus();
  }
  absl::Status Get(uint64_t key) {
    auto it = memo_.find(key);
    if (it == memo_.end()) return Error(absl::StrCat("memo entry ", key, " was never stored"));
    return Push(it->second);
  }
  absl::Status SetItems(PyRef dict, const std::vector<PyRef>& kv) {
    if (kv.size() % 2 != 0) return Error("SETITEMS with an odd number of values");
    if (dict->kind == PyValue::kObject) return absl::OkStatus();  // an opaque object's items: skipped
    if (dict->kind != PyValue::kDict) return Error("SETITEMS on something that is not a dict");
    dict->items.insert(dict->items.end(), kv.begin(), kv.end());
    return absl::OkStatus();
  }

  absl::StatusOr<PyRef> LoadStorage(const PyRef& pid) {
    // ('storage', <storage class>, key, location, numel)
    if (pid->kind != PyValue::kTuple || pid->items.size() < 5 || pid->items[0]->kind != PyValue::kString ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != PyValue::kGlobal ||
        pid->items[2]->kind != PyValue::kString || pid->items[4]->kind != PyValue::kInt) {
      return Error("a persistent id that is not ('storage', type, key, location, numel)");
    }
    bool known = false;
    const torch::ScalarType dtype = StorageDtype(pid->items[1]->s, &known);
    if (!known) return Error(absl::StrCat("unsupported storage type ", pid->items[1]->s));
    const std::string& key = pid->items[2]->s;
    auto cached = storages_.find(key);
    if (cached == storages_.end()) {
      auto t = storage_(key, dtype);
      if (!t.ok()) return t.status();
      if (t->numel() < pid->items[4]->i) {
        return Error(absl::StrCat("storage ", key, " holds ", t->numel(), " elements, the pickle says ",
                                  pid->items[4]->i));
      }
      cached = storages_.emplace(key, *t).first;
    }
    auto v = Make(PyValue::kStorage);
    v->tensor = cached->second;
    return v;
  }

  // torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, ...)
  absl::StatusOr<PyRef> RebuildTensor(const std::vector<PyRef>& a) {
    if (a.size() < 4 || a[0]->kind != PyValue::kStorage || a[1]->kind != PyValue::kInt ||
        a[2]->kind != PyValue::kTuple || a[3]->kind != PyValue::kTuple || a[2]->items.size() != a[3]->items.size()) {
      return Error("_rebuild_tensor_v2 with arguments that are not (storage, offset, size, stride, ...)");
    }
    std::vector<int64_t> size, stride;
    const int64_t offset = a[1]->i;
    int64_t last = offset;
    bool empty = false;
    for (size_t d = 0; d < a[2]->items.size(); ++d) {
      const PyRef& n = a[2]->items[d];
      const PyRef& s = a[3]->items[d];
      if (n->kind != PyValue::kInt || s->kind != PyValue::kInt || n->i < 0 || s->i < 0 || n->i > (int64_t{1} << 40) ||
          s->i > (int64_t{1} << 40)) {
        return Error("a tensor size or stride that is not a small non-negative integer");
      }
      size.push_back(n->i);
      stride.push_back(s->i);
      empty = empty || n->i == 0;
      if (n->i > 0) last += (n->i - 1) * s->i;
    }
    const int64_t numel = a[0]->tensor.numel();
    if (offset < 0 || (!empty && last >= numel)) {
      return Error(absl::StrCat("a tensor reaches element ", last, " of a storage of ", numel));
    }
    auto v = Make(PyValue::kTensor);
    v->tensor = empty ? torch::empty(size, a[0]->tensor.options()) : a[0]->tensor.as_strided(size, stride, offset);
    return v;
  }

  absl::Status Reduce(const PyRef& callable, const PyRef& args) {
    if (args->kind != PyValue::kTuple) return Error("REDUCE arguments are not a tuple");
    const std::string name = callable->kind == PyValue::kGlobal ? callable->s : "";
    if (name == "collections.OrderedDict") {
      if (!args->items.empty()) return Error("OrderedDict built from arguments");
      return Push(Make(PyValue::kDict));
    }
    if (name == "torch._utils._rebuild_tensor_v2") {
      auto t = RebuildTensor(args->items);
      if (!t.ok()) return t.status();
      return Push(*t);
    }
    if (name == "torch._utils._rebuild_parameter" || name == "torch._utils._rebuild_parameter_with_state") {
      if (args->items.empty() || args->items[0]->kind != PyValue::kTensor) return Error("a parameter of no tensor");
      return Push(args->items[0]);
    }
    auto obj = Make(PyValue::kObject);  // anything else stays opaque
    obj->s = name;
    return Push(obj);
  }

  absl::Status Step(uint8_t op) {
    switch (op) {
      case 0x80:  // PROTO
        if (!Need(1)) return Error("truncated PROTO");
        pos_ += 1;
        return absl::OkStatus();
      case 0x95:  // FRAME
        if (!Need(8)) return Error("truncated FRAME");
        pos_ += 8;
        return absl::OkStatus();
      case '}': return Push(Make(PyValue::kDict));
      case ']': return Push(Make(PyValue::kList));
      case ')': return Push(Make(PyValue::kTuple));
      case '(':
        marks_.push_back(stack_.size());
        return absl::OkStatus();
      case 'N': return Push(Make(PyValue::kNone));
      case 0x88:
      case 0x89: {
        auto v = Make(PyValue::kBool);
        v->i = op == 0x88;
        return Push(v);
      }
      case 'K':
        if (!Need(1)) return Error("truncated BININT1");
        return PushInt(static_cast<int64_t>(ReadLe(1)));
      case 'M':
        if (!Need(2)) return Error("truncated BININT2");
        return PushInt(static_cast<int64_t>(ReadLe(2)));
      case 'J':
        if (!Need(4)) return Error("truncated BININT");
        return PushInt(static_cast<int32_t>(static_cast<uint32_t>(ReadLe(4))));
      case 0x8a: {  // LONG1: n bytes, little-endian two's complement
        if (!Need(1)) return Error("truncated LONG1");
        const size_t n = ReadLe(1);
        if (n > 8 || !Need(n)) return Error("a LONG1 wider than 64 bits or past the end");
        uint64_t v = n == 0 ? 0 : ReadLe(n);
        if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~uint64_t{0} << (8 * n);
        return PushInt(static_cast<int64_t>(v));
      }
      case 'G': {  // BINFLOAT, big-endian
        if (!Need(8)) return Error("truncated BINFLOAT");
        uint64_t bits = 0;
        for (int k = 0; k < 8; ++k) bits = (bits << 8) | static_cast<uint8_t>(data_[pos_ + k]);
        pos_ += 8;
        auto v = Make(PyValue::kFloat);
        std::memcpy(&v->f, &bits, 8);
        return Push(v);
      }
      case 'X': return PushString(4);     // BINUNICODE
      case 0x8c: return PushString(1);    // SHORT_BINUNICODE
      case 0x8d: return PushString(8);    // BINUNICODE8
      case 'B': return PushString(4);     // BINBYTES (kept as a string)
      case 'C': return PushString(1);     // SHORT_BINBYTES
      case 'q':
        if (!Need(1)) return Error("truncated BINPUT");
        return Memo(ReadLe(1));
      case 'r':
        if (!Need(4)) return Error("truncated LONG_BINPUT");
        return Memo(ReadLe(4));
      case 0x94: return Memo(memo_.size());  // MEMOIZE
      case 'h':
        if (!Need(1)) return Error("truncated BINGET");
        return Get(ReadLe(1));
      case 'j':
        if (!Need(4)) return Error("truncated LONG_BINGET");
        return Get(ReadLe(4));
      case 'c': {  // GLOBAL "module\nname\n"
        const size_t a = data_.find('\n', pos_);
        const size_t b = a == std::string::npos ? a : data_.find('\n', a + 1);
        if (b == std::string::npos || b - pos_ > 512) return Error("an unterminated GLOBAL");
        std::string module = data_.substr(pos_, a - pos_), name = data_.substr(a + 1, b - a - 1);
        pos_ = b + 1;
        return PushGlobal(module, name);
      }
      case 0x93: {  // STACK_GLOBAL
        auto name = Pop();
        if (!name.ok()) return name.status();
        auto module = Pop();
        if (!module.ok()) return module.status();
        if ((*name)->kind != PyValue::kString || (*module)->kind != PyValue::kString) {
          return Error("STACK_GLOBAL of values that are not strings");
        }
        return PushGlobal((*module)->s, (*name)->s);
      }
      case 't': {
        auto items = PopToMark();
        if (!items.ok()) return items.status();
        auto t = Make(PyValue::kTuple);
        t->items = std::move(*items);
        return Push(t);
      }
      case 0x85: return PushTuple(1);
      case 0x86: return PushTuple(2);
      case 0x87: return PushTuple(3);
      case 'R':
      case 0x81: {  // REDUCE callable(*args); NEWOBJ cls.__new__(cls, *args)
        auto args = Pop();
        if (!args.ok()) return args.status();
        auto callable = Pop();
        if (!callable.ok()) return callable.status();
        if (op == 'R') return Reduce(*callable, *args);
        auto obj = Make(PyValue::kObject);
        obj->s = (*callable)->s;
        return Push(obj);
      }
      case 'Q': {  // BINPERSID
        auto pid = Pop();
        if (!pid.ok()) return pid.status();
        auto storage = LoadStorage(*pid);
        if (!storage.ok()) return storage.status();
        return Push(*storage);
      }
      case 's': {
        auto value = Pop();
        if (!value.ok()) return value.status();
        auto key = Pop();
        if (!key.ok()) return key.status();
        if (stack_.empty()) return Error("SETITEM with no dict");
        return SetItems(stack_.back(), {*key, *value});
      }
      case 'u': {
        auto kv = PopToMark();
        if (!kv.ok()) return kv.status();
        if (stack_.empty()) return Error("SETITEMS with no dict");
        return SetItems(stack_.back(), *kv);
      }
      case 'a':
      case 'e': {
        std::vector<PyRef> values;
        if (op == 'a') {
          auto v = Pop();
          if (!v.ok()) return v.status();
          values.push_back(*v);
        } else {
          auto v = PopToMark();
          if (!v.ok()) return v.status();
          values = std::move(*v);
        }
        if (stack_.empty()) return Error("APPEND with no list");
        PyRef& list = stack_.back();
        if (list->kind == PyValue::kObject) return absl::OkStatus();
        if (list->kind != PyValue::kList) return Error("APPEND to something that is not a list");
        list->items.insert(list->items.end(), values.begin(), values.end());
        return absl::OkStatus();
      }
      case 'b': {  // BUILD: an object's state; a state dict's _metadata is not needed
        auto state = Pop();
        if (!state.ok()) return state.status();
        if (stack_.empty()) return Error("BUILD with no object");
        return absl::OkStatus();
      }
      case '.':
        done_ = true;
        return absl::OkStatus();
      default:
        return Error(absl::StrFormat("unsupported pickle opcode 0x%02x", op));
    }
  }

  static constexpr size_t kMaxStack = 1000000;
  const std::string& what_;
  const std::string& data_;
  const StorageReader& storage_;
  size_t pos_ = 0, op_at_ = 0;
  bool done_ = false;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
  std::map<std::string, torch::Tensor> storages_;
};

std::string FirstLine(const std::exception& e) {
  const std::string what = e.what();
  return what.substr(0, what.find('\n'));  // LibTorch appends a stack trace
}

const PyValue* DictEntry(const PyValue& dict, const std::string& key) {
  for (size_t k = 0; k + 1 < dict.items.size(); k += 2) {
    if (dict.items[k]->kind == PyValue::kString && dict.items[k]->s == key) return dict.items[k + 1].get();
  }
  return nullptr;
}

}  // namespace

absl::StatusOr<TensorDict> UnpickleStateDict(const std::string& what, const std::string& pickle,
                                             const StorageReader& storage) {
  auto top = Unpickler(what, pickle, storage).Run();
  if (!top.ok()) return top.status();
  const PyValue* dict = top->get();
  if (dict->kind != PyValue::kDict) return absl::InvalidArgumentError(what + ": the file does not hold a dict");
  for (const char* key : {"model", "module", "state_dict"}) {
    const PyValue* inner = DictEntry(*dict, key);
    if (inner != nullptr && inner->kind == PyValue::kDict) {
      dict = inner;
      break;
    }
  }
  TensorDict out;
  for (size_t k = 0; k + 1 < dict->items.size(); k += 2) {
    const PyValue& key = *dict->items[k];
    const PyValue& value = *dict->items[k + 1];
    if (key.kind == PyValue::kString && value.kind == PyValue::kTensor) out[key.s] = value.tensor;
  }
  if (out.empty()) return absl::InvalidArgumentError(what + ": no tensors in the file's dict");
  return out;
}

absl::StatusOr<TensorDict> ReadTorchStateDict(const std::string& path) {
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> reader;
  std::string pickle;
  try {
    reader = std::make_unique<caffe2::serialize::PyTorchStreamReader>(path);
    auto [data, size] = reader->getRecord("data.pkl");
    pickle.assign(static_cast<const char*>(data.get()), size);
  } catch (const std::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(
        path, ": not a readable torch.save zip archive (truncated, or the pre-1.6 format?): ", FirstLine(e)));
  }
  StorageReader storage = [&](const std::string& key, torch::ScalarType dtype) -> absl::StatusOr<torch::Tensor> {
    const std::string name = "data/" + key;
    try {
      if (key.empty() || key.find('/') != std::string::npos || !reader->hasRecord(name)) {
        return absl::InvalidArgumentError(absl::StrCat(path, ": storage record ", name, " is missing"));
      }
      auto [data, size] = reader->getRecord(name);
      const size_t element = c10::elementSize(dtype);
      auto t = torch::empty({static_cast<int64_t>(size / element)}, torch::TensorOptions().dtype(dtype));
      std::memcpy(t.data_ptr(), data.get(), (size / element) * element);
      return t;
    } catch (const std::exception& e) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": storage record ", name, ": ", FirstLine(e)));
    }
  };
  return UnpickleStateDict(path, pickle, storage);
}

}  // namespace dd2
