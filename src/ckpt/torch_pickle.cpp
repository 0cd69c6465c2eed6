// .pt / .pth state dicts: the torch.save zip archive read with LibTorch's PyTorchStreamReader and
// its data.pkl run through a small pickle machine that knows what state dicts hold.
//
// LibTorch's own torch::jit::pickle_load cannot read them: torch.save pickles a state dict as an
// OrderedDict with a `_metadata` attribute, restored by a BUILD opcode that the TorchScript
// unpickler treats as a function call (it fails with "Expected GenericDict but got None").
#include "lathe/ckpt/torch_pickle.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>

#include <bit>
#include <cstring>
#include <map>
#include <memory>
#include <vector>

#include "lathe/core/error.h"

namespace lathe::ckpt {
namespace {

/// One Python object as far as state dicts need them.
struct PyObject;
using Obj = std::shared_ptr<PyObject>;
struct PyObject {
  enum class Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, Tensor, Global };
  Kind kind = Kind::None;
  int64_t i = 0;
  double f = 0;
  std::string s;                          ///< Str; Global as "module.name"
  std::vector<Obj> items;                 ///< Tuple, List
  std::vector<std::pair<Obj, Obj>> dict;  ///< Dict, in insertion order
  at::Tensor tensor;                      ///< Tensor (also a storage: 1-D, its dtype)
};

Obj make(PyObject::Kind k) {
  auto o = std::make_shared<PyObject>();
  o->kind = k;
  return o;
}

const std::map<std::string, at::ScalarType>& storage_dtypes() {
  static const std::map<std::string, at::ScalarType> m = {
      {"DoubleStorage", at::kDouble},
      {"FloatStorage", at::kFloat},
      {"HalfStorage", at::kHalf},
      {"BFloat16Storage", at::kBFloat16},
      {"LongStorage", at::kLong},
      {"IntStorage", at::kInt},
      {"ShortStorage", at::kShort},
      {"CharStorage", at::kChar},
      {"ByteStorage", at::kByte},
      {"BoolStorage", at::kBool},
      {"ComplexFloatStorage", at::kComplexFloat},
      {"ComplexDoubleStorage", at::kComplexDouble}};
  return m;
}

/// Runs data.pkl; tensors' storages come from the archive's data/<key> records.
class StateDictUnpickler {
 public:
  StateDictUnpickler(caffe2::serialize::PyTorchStreamReader& zip, const char* data, size_t size,
                     std::string file)
      : zip_(zip), p_(data), end_(data + size), file_(std::move(file)) {}

  Obj run() {
    for (;;) {
      const auto op = static_cast<uint8_t>(byte());
      if (op == '.') break;
      step(op);
    }
    LATHE_CHECK(stack_.size() == 1, CheckpointError, "{}: malformed pickle (stack of {} at STOP)",
                file_, stack_.size());
    return stack_.back();
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw CheckpointError(fmt::format("{}: {}", file_, what));
  }
  char byte() {
    if (p_ >= end_) fail("truncated pickle in data.pkl");
    return *p_++;
  }
  template <class T>
  T le() {  // little-endian integer
    if (end_ - p_ < static_cast<ptrdiff_t>(sizeof(T))) fail("truncated pickle in data.pkl");
    T v;
    std::memcpy(&v, p_, sizeof(T));
    p_ += sizeof(T);
    return v;
  }
  std::string bytes(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) fail("truncated pickle in data.pkl");
    std::string s(p_, n);
    p_ += n;
    return s;
  }
  std::string line() {
    std::string s;
    for (char c = byte(); c != '\n'; c = byte()) s += c;
    return s;
  }
  Obj pop() {
    if (stack_.empty()) fail("malformed pickle (pop from an empty stack)");
    Obj o = stack_.back();
    stack_.pop_back();
    return o;
  }
  std::vector<Obj> pop_to_mark() {
    if (marks_.empty()) fail("malformed pickle (no MARK)");
    const size_t start = marks_.back();
    marks_.pop_back();
    std::vector<Obj> items(stack_.begin() + static_cast<ptrdiff_t>(start), stack_.end());
    stack_.resize(start);
    return items;
  }
  Obj str(std::string s) {
    Obj o = make(PyObject::Kind::Str);
    o->s = std::move(s);
    return o;
  }
  Obj integer(int64_t v) {
    Obj o = make(PyObject::Kind::Int);
    o->i = v;
    return o;
  }
  Obj tuple(std::vector<Obj> items) {
    Obj o = make(PyObject::Kind::Tuple);
    o->items = std::move(items);
    return o;
  }
  Obj global(const std::string& module, const std::string& name) {
    Obj o = make(PyObject::Kind::Global);
    o->s = module + "." + name;
    return o;
  }
  void memo_put(size_t key) { memo_[key] = stack_.at(stack_.size() - 1); }
  Obj memo_get(size_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) fail(fmt::format("malformed pickle (memo {} unset)", key));
    return it->second;
  }
  static std::vector<int64_t> ints(const Obj& t) {
    std::vector<int64_t> v;
    for (const auto& x : t->items) v.push_back(x->i);
    return v;
  }

  /// persistent_id ('storage', torch.FloatStorage, key, location, numel) → a 1-D tensor holding
  /// the archive's data/<key>, shared by every tensor viewing that storage.
  Obj storage(const Obj& pid) {
    if (pid->kind != PyObject::Kind::Tuple || pid->items.size() < 5 ||
        pid->items[0]->s != "storage")
      fail("unsupported persistent id in data.pkl (expected a tensor storage)");
    const std::string& key = pid->items[2]->s;
    if (const auto it = storages_.find(key); it != storages_.end()) return it->second;
    const std::string type = pid->items[1]->s.substr(pid->items[1]->s.rfind('.') + 1);
    const auto dt = storage_dtypes().find(type);
    if (dt == storage_dtypes().end()) fail(fmt::format("unsupported storage type torch.{}", type));
    const int64_t numel = pid->items[4]->i;
    at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dt->second));
    const size_t want = static_cast<size_t>(numel) * t.element_size();
    const std::string record = "data/" + key;
    if (!zip_.hasRecord(record)) fail(fmt::format("archive lacks record {}", record));
    auto [data, size] = zip_.getRecord(record);
    if (size < want)
      fail(fmt::format("record {} holds {} bytes, its storage needs {}", record, size, want));
    std::memcpy(t.data_ptr(), data.get(), want);
    Obj o = make(PyObject::Kind::Tensor);
    o->tensor = t;
    storages_.emplace(key, o);
    return o;
  }

  Obj call(const Obj& fn, const Obj& args) {
    const std::string& name = fn->s;
    if (name == "collections.OrderedDict" || name == "builtins.dict") {
      return make(PyObject::Kind::Dict);
    }
    if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
      const auto& a = args->items;  // (storage, offset, size, stride, ...)
      if (a.size() < 4 || a[0]->kind != PyObject::Kind::Tensor) fail("malformed tensor record");
      Obj o = make(PyObject::Kind::Tensor);
      o->tensor = a[0]->tensor.as_strided(ints(a[2]), ints(a[3]), a[1]->i);
      return o;
    }
    if (name == "torch._utils._rebuild_parameter" ||
        name == "torch._utils._rebuild_parameter_with_state") {
      return args->items.at(0);  // (data, requires_grad, hooks[, state])
    }
    fail(
        fmt::format("the pickle holds a {} object; only state dicts of tensors load (save "
                    "model.state_dict(), not the model)",
                    name));
  }

  void step(uint8_t op) {
    using K = PyObject::Kind;
    switch (op) {
      case 0x80:
        byte();
        break;  // PROTO
      case 0x95:
        le<uint64_t>();
        break;  // FRAME
      case '(':
        marks_.push_back(stack_.size());
        break;
      case '}':
        stack_.push_back(make(K::Dict));
        break;
      case ']':
        stack_.push_back(make(K::List));
        break;
      case ')':
        stack_.push_back(tuple({}));
        break;
      case 't':
        stack_.push_back(tuple(pop_to_mark()));
        break;
      case 0x85: {
        Obj a = pop();
        stack_.push_back(tuple({a}));
      } break;
      case 0x86: {
        Obj b = pop(), a = pop();
        stack_.push_back(tuple({a, b}));
      } break;
      case 0x87: {
        Obj c = pop(), b = pop(), a = pop();
        stack_.push_back(tuple({a, b, c}));
      } break;
      case 'l': {
        Obj l = make(K::List);
        l->items = pop_to_mark();
        stack_.push_back(l);
      } break;
      case 'a': {
        Obj v = pop();
        stack_.back()->items.push_back(v);
      } break;
      case 'e': {
        auto v = pop_to_mark();
        auto& items = stack_.back()->items;
        items.insert(items.end(), v.begin(), v.end());
      } break;
      case 'd':
      case 's':
      case 'u': {
        std::vector<Obj> kv;
        Obj target;
        if (op == 's') {
          Obj v = pop(), k = pop();
          kv = {k, v};
          target = stack_.back();
        } else {
          kv = pop_to_mark();
          target = op == 'd' ? make(K::Dict) : stack_.back();
          if (op == 'd') stack_.push_back(target);
        }
        if (target->kind != K::Dict) fail("malformed pickle (SETITEM on a non-dict)");
        for (size_t i = 0; i + 1 < kv.size(); i += 2) target->dict.emplace_back(kv[i], kv[i + 1]);
      } break;
      case 'q':
        memo_put(static_cast<uint8_t>(byte()));
        break;
      case 'r':
        memo_put(le<uint32_t>());
        break;
      case 0x94:
        memo_put(memo_.size());
        break;  // MEMOIZE
      case 'h':
        stack_.push_back(memo_get(static_cast<uint8_t>(byte())));
        break;
      case 'j':
        stack_.push_back(memo_get(le<uint32_t>()));
        break;
      case 'c': {
        std::string m = line();
        stack_.push_back(global(m, line()));
      } break;
      case 0x93: {
        Obj n = pop(), m = pop();
        stack_.push_back(global(m->s, n->s));
      } break;
      case 'R':
      case 0x81: {
        Obj args = pop(), fn = pop();
        stack_.push_back(call(fn, args));
      } break;
      case 'b':
        pop();
        break;  // BUILD: an OrderedDict's __dict__ (_metadata), not needed
      case 'Q': {
        Obj pid = pop();
        stack_.push_back(storage(pid));
      } break;
      case 'J':
        stack_.push_back(integer(le<int32_t>()));
        break;
      case 'K':
        stack_.push_back(integer(static_cast<uint8_t>(byte())));
        break;
      case 'M':
        stack_.push_back(integer(le<uint16_t>()));
        break;
      case 0x8a: {  // LONG1
        const auto n = static_cast<uint8_t>(byte());
        if (n > 8) fail("integer too large in data.pkl");
        const std::string b = bytes(n);
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k)
          v |= static_cast<uint64_t>(static_cast<uint8_t>(b[k])) << (8 * k);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
        stack_.push_back(integer(static_cast<int64_t>(v)));
      } break;
      case 'G': {  // BINFLOAT, big-endian
        uint64_t bits = le<uint64_t>();
        if constexpr (std::endian::native == std::endian::little) bits = __builtin_bswap64(bits);
        Obj o = make(K::Float);
        std::memcpy(&o->f, &bits, sizeof bits);
        stack_.push_back(o);
      } break;
      case 'N':
        stack_.push_back(make(K::None));
        break;
      case 0x88:
      case 0x89: {
        Obj o = make(K::Bool);
        o->i = op == 0x88;
        stack_.push_back(o);
      } break;
      case 'X':
        stack_.push_back(str(bytes(le<uint32_t>())));
        break;
      case 0x8c:
      case 'U':
      case 'C':
        stack_.push_back(str(bytes(static_cast<uint8_t>(byte()))));
        break;
      case 0x8d:
        stack_.push_back(str(bytes(le<uint64_t>())));
        break;
      case 'T':
      case 'B':
        stack_.push_back(str(bytes(le<uint32_t>())));
        break;
      case '0':
        pop();
        break;
      case '1':
        pop_to_mark();
        break;
      case '2':
        stack_.push_back(stack_.at(stack_.size() - 1));
        break;
      default:
        fail(fmt::format("unsupported pickle opcode 0x{:02x} in data.pkl", op));
    }
  }

  caffe2::serialize::PyTorchStreamReader& zip_;
  const char* p_;
  const char* end_;
  std::string file_;
  std::vector<Obj> stack_;
  std::vector<size_t> marks_;
  std::map<size_t, Obj> memo_;
  std::map<std::string, Obj> storages_;
};

/// The dict holding the tensors: the top level, or its "state_dict" / "model" entry.
const PyObject& state_dict_of(const Obj& root, const std::string& file) {
  LATHE_CHECK(root->kind == PyObject::Kind::Dict, CheckpointError,
              "{}: expected a state dict (a dict of name -> tensor) saved with "
              "torch.save(model.state_dict())",
              file);
  for (const char* wrapper : {"state_dict", "model"})
    for (const auto& [k, v] : root->dict)
      if (k->kind == PyObject::Kind::Str && k->s == wrapper && v->kind == PyObject::Kind::Dict)
        return *v;
  return *root;
}

}  // namespace

NamedTensors load_torch_state_dict(const std::filesystem::path& file) {
  const std::string name = file.string();
  LATHE_CHECK(std::filesystem::is_regular_file(file), CheckpointError,
              "{}: no such weights file (or it cannot be read)", name);
  std::unique_ptr<caffe2::serialize::PyTorchStreamReader> zip;
  try {
    zip = std::make_unique<caffe2::serialize::PyTorchStreamReader>(name);
  } catch (const std::exception& e) {
    throw CheckpointError(fmt::format(
        "{}: not a readable torch.save archive (a zip file; files from torch < 1.6 or saved with "
        "_use_new_zipfile_serialization=False are not supported: re-save or convert to "
        "safetensors): {}",
        name, std::string(e.what()).substr(0, std::string(e.what()).find('\n'))));
  }
  LATHE_CHECK(zip->hasRecord("data.pkl"), CheckpointError,
              "{}: the archive has no data.pkl; is it a TorchScript module (torch.jit.save)? Save "
              "model.state_dict() with torch.save instead",
              name);
  auto [pkl, size] = zip->getRecord("data.pkl");
  const Obj root = StateDictUnpickler(*zip, static_cast<const char*>(pkl.get()), size, name).run();
  NamedTensors out;
  for (const auto& [k, v] : state_dict_of(root, name).dict) {
    LATHE_CHECK(k->kind == PyObject::Kind::Str, CheckpointError,
                "{}: a state dict key is not a string", name);
    LATHE_CHECK(v->kind == PyObject::Kind::Tensor, CheckpointError,
                "{}: entry '{}' is not a tensor; only state dicts of tensors load", name, k->s);
    out.emplace_back(k->s, v->tensor);
  }
  return out;
}

LoadReport load_weights_any(torch::nn::Module& module, const std::filesystem::path& file,
                            bool strict) {
  return load_state_dict(module, load_state_dict_file(file), strict, file.string());
}

}  // namespace lathe::ckpt
