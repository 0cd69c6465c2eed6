// .pt / .pth state dicts: the torch.save zip archive read with LibTorch's PyTorchStreamReader and
// its data.pkl run through a small pickle machine that knows what state dicts hold.
//
// LibTorch's own torch::jit::pickle_load cannot read them: torch.save pickles a state dict as an
// OrderedDict with a `_metadata` attribute, restored by a BUILD opcode that the TorchScript
// unpickler treats as a function call (it fails with "Expected GenericDict but got None").
#include "lathe/ckpt/torch_pickle.h"

#include <ATen/ATen.h>
#include <caffe2/serialize/inline_container.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <bit>
#include <cstring>
#include <map>
#include <memory>
#include <set>
#include <vector>

#include "lathe/core/activity.h"
#include "lathe/core/error.h"
#include "lathe/core/fs.h"

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
  size_t depth = 1;  ///< nesting depth when last grown (a bound, see kMaxDepth)
  std::map<std::string, size_t> str_keys;  ///< Dict: position of each string key in `dict`
  std::map<int64_t, size_t> int_keys;      ///< Dict: position of each integer key in `dict`
};

/// Python's own recursion limit: deeper containers are refused as they are built.
constexpr size_t kMaxDepth = 1000;

Obj make_object(PyObject::Kind k) {
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
  StateDictUnpickler(const PickleRecords& records, std::string_view pkl, std::string file)
      : records_(records), p_(pkl.data()), end_(pkl.data() + pkl.size()), file_(std::move(file)) {}
  StateDictUnpickler(const StateDictUnpickler&) = delete;
  StateDictUnpickler& operator=(const StateDictUnpickler&) = delete;
  /// Frees the object graph without recursion: a hostile pickle can nest containers (or link
  /// them in a cycle) deeper than the stack, and shared_ptr's destructors would recurse. Every
  /// object lives in arena_ until here, so none is freed (recursively) while the pickle runs.
  ~StateDictUnpickler() {
    for (const auto& o : arena_) {  // the arena holds every object: clearing frees nothing yet
      o->items.clear();
      o->dict.clear();
    }
  }

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
  /// A new object, kept in the arena; their number is bounded (each costs an opcode or more).
  Obj make(PyObject::Kind k) {
    if (arena_.size() >= kMaxObjects)
      fail(fmt::format("malformed pickle (more than {} objects; a state dict has far fewer)",
                       kMaxObjects));
    arena_.push_back(make_object(k));
    return arena_.back();
  }
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
  /// The bottom of the current frame: objects below the last MARK are out of reach, as in
  /// Python's unpickler (which moves them to a separate stack).
  size_t base() const { return marks_.empty() ? 0 : marks_.back(); }
  Obj pop() {
    if (stack_.size() <= base()) fail("malformed pickle (pop from an empty stack)");
    Obj o = stack_.back();
    stack_.pop_back();
    return o;
  }
  Obj& top() {
    if (stack_.size() <= base()) fail("malformed pickle (an opcode needs an object on the stack)");
    return stack_.back();
  }
  void push(Obj o) {
    if (stack_.size() >= kMaxStack) fail("malformed pickle (the stack grows without bound)");
    stack_.push_back(std::move(o));
  }
  std::vector<Obj> pop_to_mark() {
    if (marks_.empty()) fail("malformed pickle (no MARK)");
    const size_t start = marks_.back();
    marks_.pop_back();
    std::vector<Obj> items(stack_.begin() + static_cast<ptrdiff_t>(start), stack_.end());
    stack_.resize(start);
    return items;
  }
  /// Records that `parent` now holds `child`; refuses nesting deeper than kMaxDepth.
  void grow(PyObject& parent, const Obj& child) {
    parent.depth = std::max(parent.depth, child->depth + 1);
    if (parent.depth > kMaxDepth)
      fail(fmt::format("malformed pickle (objects nest deeper than {} levels)", kMaxDepth));
  }
  /// dict[k] = v as Python does: a repeated key keeps its first position and takes the last value.
  void set_item(PyObject& d, const Obj& k, const Obj& v) {
    grow(d, k);
    grow(d, v);
    size_t* slot = nullptr;
    if (k->kind == PyObject::Kind::Str) {
      const auto [it, fresh] = d.str_keys.emplace(k->s, d.dict.size());
      if (!fresh) slot = &it->second;
    } else if (k->kind == PyObject::Kind::Int || k->kind == PyObject::Kind::Bool) {
      const auto [it, fresh] = d.int_keys.emplace(k->i, d.dict.size());
      if (!fresh) slot = &it->second;
    }
    if (slot != nullptr)
      d.dict[*slot].second = v;
    else
      d.dict.emplace_back(k, v);
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
    for (const auto& i : items) grow(*o, i);
    o->items = std::move(items);
    return o;
  }
  Obj global(const std::string& module, const std::string& name) {
    Obj o = make(PyObject::Kind::Global);
    o->s = module + "." + name;
    return o;
  }
  void memo_put(size_t key) {
    if (memo_.size() >= kMaxStack) fail("malformed pickle (the memo grows without bound)");
    memo_[key] = top();
  }
  Obj memo_get(size_t key) {
    const auto it = memo_.find(key);
    if (it == memo_.end()) fail(fmt::format("malformed pickle (memo {} unset)", key));
    return it->second;
  }
  std::vector<int64_t> ints(const Obj& t, const char* what) const {
    if (t->kind != PyObject::Kind::Tuple) fail(fmt::format("malformed tensor record ({})", what));
    std::vector<int64_t> v;
    for (const auto& x : t->items) {
      if (x->kind != PyObject::Kind::Int || x->i < 0)
        fail(fmt::format("malformed tensor record ({} must be non-negative integers)", what));
      v.push_back(x->i);
    }
    return v;
  }

  /// persistent_id ('storage', torch.FloatStorage, key, location, numel) → a 1-D tensor holding
  /// the archive's data/<key>, shared by every tensor viewing that storage.
  Obj storage(const Obj& pid) {
    using K = PyObject::Kind;
    if (pid->kind != K::Tuple || pid->items.size() < 5 || pid->items[0]->kind != K::Str ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != K::Global ||
        pid->items[2]->kind != K::Str || pid->items[4]->kind != K::Int)
      fail("unsupported persistent id in data.pkl (expected a tensor storage)");
    const std::string& key = pid->items[2]->s;
    if (const auto it = storages_.find(key); it != storages_.end()) return it->second;
    const std::string type = pid->items[1]->s.substr(pid->items[1]->s.rfind('.') + 1);
    const auto dt = storage_dtypes().find(type);
    if (dt == storage_dtypes().end()) fail(fmt::format("unsupported storage type torch.{}", type));
    const int64_t numel = pid->items[4]->i;
    const std::string record = "data/" + key;
    if (!records_.has(record)) fail(fmt::format("archive lacks record {}", record));
    // The record's real size bounds the allocation, whatever the pickle declares.
    const size_t size = records_.size(record);
    const auto elem = static_cast<size_t>(c10::elementSize(dt->second));
    if (numel < 0 || static_cast<uint64_t>(numel) > size / elem)
      fail(
          fmt::format("record {} holds {} bytes, but its storage declares {} elements of {} "
                      "bytes; the file is truncated or corrupt",
                      record, size, numel, elem));
    at::Tensor t = at::empty({numel}, at::TensorOptions().dtype(dt->second));
    const size_t want = static_cast<size_t>(numel) * elem;
    if (want > 0) records_.read(record, t.data_ptr(), want);  // an empty storage has no buffer
    if (big_endian_ && elem > 1) {  // swap each scalar (each half of a complex number)
      const size_t unit = c10::isComplexType(dt->second) ? elem / 2 : elem;
      auto* b = static_cast<uint8_t*>(t.data_ptr());
      for (size_t i = 0; i < want; i += unit) std::reverse(b + i, b + i + unit);
    }
    Obj o = make(K::Tensor);
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
      if (a.size() < 4 || a[0]->kind != PyObject::Kind::Tensor || a[1]->kind != PyObject::Kind::Int)
        fail("malformed tensor record");
      const std::vector<int64_t> size = ints(a[2], "sizes"), stride = ints(a[3], "strides");
      if (size.size() != stride.size()) fail("malformed tensor record (sizes vs strides)");
      // The last element it reaches must lie inside its storage (no overflow on the way).
      const int64_t numel = a[0]->tensor.numel();
      int64_t last = a[1]->i;
      bool empty = false;
      for (size_t d = 0; d < size.size(); ++d) {
        if (size[d] == 0) empty = true;
        int64_t span = 0;
        if (size[d] > 0 && (__builtin_mul_overflow(size[d] - 1, stride[d], &span) ||
                            __builtin_add_overflow(last, span, &last)))
          fail("malformed tensor record (its view overflows)");
      }
      if (a[1]->i < 0 || (!empty && last >= numel) || (empty && a[1]->i > numel))
        fail(
            fmt::format("malformed tensor record: a view of sizes [{}], strides [{}] at offset "
                        "{} reaches beyond its storage of {} elements",
                        fmt::join(size, ", "), fmt::join(stride, ", "), a[1]->i, numel));
      Obj o = make(PyObject::Kind::Tensor);
      o->tensor = a[0]->tensor.as_strided(size, stride, a[1]->i);
      return o;
    }
    if (name == "torch._utils._rebuild_parameter" ||
        name == "torch._utils._rebuild_parameter_with_state") {
      if (args->items.empty() || args->items[0]->kind != PyObject::Kind::Tensor)
        fail("malformed parameter record (expected a tensor first)");
      return args->items[0];  // (data, requires_grad, hooks[, state])
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
        if (marks_.size() >= kMaxStack) fail("malformed pickle (too many MARKs)");
        marks_.push_back(stack_.size());
        break;
      case '}':
        push(make(K::Dict));
        break;
      case ']':
        push(make(K::List));
        break;
      case ')':
        push(tuple({}));
        break;
      case 't':
        push(tuple(pop_to_mark()));
        break;
      case 0x85: {
        Obj a = pop();
        push(tuple({a}));
      } break;
      case 0x86: {
        Obj b = pop(), a = pop();
        push(tuple({a, b}));
      } break;
      case 0x87: {
        Obj c = pop(), b = pop(), a = pop();
        push(tuple({a, b, c}));
      } break;
      case 'l': {
        Obj l = make(K::List);
        l->items = pop_to_mark();
        for (const auto& x : l->items) grow(*l, x);
        push(l);
      } break;
      case 'a': {
        Obj v = pop();
        Obj& l = top();
        if (l->kind != K::List) fail("malformed pickle (APPEND on a non-list)");
        grow(*l, v);
        l->items.push_back(v);
      } break;
      case 'e': {
        auto v = pop_to_mark();
        Obj& l = top();
        if (l->kind != K::List) fail("malformed pickle (APPENDS on a non-list)");
        for (const auto& x : v) grow(*l, x);
        l->items.insert(l->items.end(), v.begin(), v.end());
      } break;
      case 'd':
      case 's':
      case 'u': {
        std::vector<Obj> kv;
        Obj target;
        if (op == 's') {
          Obj v = pop(), k = pop();
          kv = {k, v};
          target = top();
        } else {
          kv = pop_to_mark();
          if (kv.size() % 2 != 0) fail("malformed pickle (a key without a value)");
          target = op == 'd' ? make(K::Dict) : top();
          if (op == 'd') push(target);
        }
        if (target->kind != K::Dict) fail("malformed pickle (SETITEM on a non-dict)");
        for (size_t i = 0; i + 1 < kv.size(); i += 2) set_item(*target, kv[i], kv[i + 1]);
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
        push(memo_get(static_cast<uint8_t>(byte())));
        break;
      case 'j':
        push(memo_get(le<uint32_t>()));
        break;
      case 'c': {
        std::string m = line();
        push(global(m, line()));
      } break;
      case 0x93: {
        Obj n = pop(), m = pop();
        if (n->kind != K::Str || m->kind != K::Str) fail("malformed pickle (STACK_GLOBAL)");
        push(global(m->s, n->s));
      } break;
      case 'R':
      case 0x81: {
        Obj args = pop(), fn = pop();
        if (fn->kind != K::Global || args->kind != K::Tuple)
          fail("malformed pickle (REDUCE needs a global and an argument tuple)");
        push(call(fn, args));
      } break;
      case 'b':
        pop();
        top();
        break;  // BUILD: an OrderedDict's __dict__ (_metadata), not needed
      case 'Q': {
        Obj pid = pop();
        push(storage(pid));
      } break;
      case 'J':
        push(integer(le<int32_t>()));
        break;
      case 'K':
        push(integer(static_cast<uint8_t>(byte())));
        break;
      case 'M':
        push(integer(le<uint16_t>()));
        break;
      case 0x8a: {  // LONG1
        const auto n = static_cast<uint8_t>(byte());
        if (n > 8) fail("integer too large in data.pkl");
        const std::string b = bytes(n);
        uint64_t v = 0;
        for (size_t k = 0; k < n; ++k)
          v |= static_cast<uint64_t>(static_cast<uint8_t>(b[k])) << (8 * k);
        if (n > 0 && n < 8 && (static_cast<uint8_t>(b[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
        push(integer(static_cast<int64_t>(v)));
      } break;
      case 'G': {  // BINFLOAT, big-endian
        uint64_t bits = le<uint64_t>();
        if constexpr (std::endian::native == std::endian::little) bits = __builtin_bswap64(bits);
        Obj o = make(K::Float);
        std::memcpy(&o->f, &bits, sizeof bits);
        push(o);
      } break;
      case 'N':
        push(make(K::None));
        break;
      case 0x88:
      case 0x89: {
        Obj o = make(K::Bool);
        o->i = op == 0x88;
        push(o);
      } break;
      case 'X':
        push(str(bytes(le<uint32_t>())));
        break;
      case 0x8c:
      case 'U':
      case 'C':
        push(str(bytes(static_cast<uint8_t>(byte()))));
        break;
      case 0x8d:
        push(str(bytes(le<uint64_t>())));
        break;
      case 'T':
      case 'B':
        push(str(bytes(le<uint32_t>())));
        break;
      case '0':
        pop();
        break;
      case '1':
        pop_to_mark();
        break;
      case '2': {
        Obj o = top();
        push(o);
      } break;
      default:
        fail(fmt::format("unsupported pickle opcode 0x{:02x} in data.pkl", op));
    }
  }

  /// Bound on the stack, the marks and the memo: far above what a state dict needs.
  static constexpr size_t kMaxStack = 1u << 24;
  /// Bound on the objects one pickle makes (a large state dict makes about ten per tensor).
  static constexpr size_t kMaxObjects = 1u << 20;

  const PickleRecords& records_;
  bool big_endian_ = false;
  std::vector<Obj> arena_;  ///< every object made, released only by the destructor

 public:
  /// Storages are stored big-endian (the archive's byteorder record says "big").
  void set_big_endian(bool big) { big_endian_ = big; }

 private:
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

NamedTensors unpickle_state_dict(std::string_view pkl, const PickleRecords& records,
                                 const std::string& origin, bool big_endian) {
  StateDictUnpickler unpickler(records, pkl, origin);
  unpickler.set_big_endian(big_endian);
  const Obj root = unpickler.run();
  NamedTensors out;
  for (const auto& [k, v] : state_dict_of(root, origin).dict) {
    LATHE_CHECK(k->kind == PyObject::Kind::Str, CheckpointError,
                "{}: a state dict key is not a string", origin);
    LATHE_CHECK(v->kind == PyObject::Kind::Tensor, CheckpointError,
                "{}: entry '{}' is not a tensor; only state dicts of tensors load", origin, k->s);
    out.emplace_back(k->s, v->tensor);
  }
  return out;
}

NamedTensors load_torch_state_dict(const std::filesystem::path& file) {
  const std::string name = file.string();
  const Doing doing(fmt::format("reading the weights file {}", name));
  const std::string why = not_a_regular_file(file);
  LATHE_CHECK(why.empty(), CheckpointError, "{}: no such weights file (or it cannot be read: {})",
              name, why);
  const uint64_t file_size = std::filesystem::file_size(file);
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
  // Every record is read through here: its declared size is checked against the file before a
  // byte is allocated (torch.save stores records uncompressed, so none can be larger than the
  // file), and zip errors become CheckpointErrors naming the record.
  const auto record_size = [&](const std::string& record) {
    size_t size = 0;
    try {
      size = zip->getRecordSize(record);
    } catch (const std::exception& e) {
      throw CheckpointError(fmt::format("{}: cannot read record {} of the archive", name, record));
    }
    LATHE_CHECK(size <= file_size, CheckpointError,
                "{}: record {} declares {} bytes, more than the whole {}-byte file (a compressed "
                "or corrupt archive; torch.save writes records uncompressed)",
                name, record, size, file_size);
    return size;
  };
  PickleRecords records;
  records.has = [&](const std::string& record) { return zip->hasRecord(record); };
  records.size = record_size;
  records.read = [&](const std::string& record, void* dst, size_t n) {
    try {
      zip->getRecord(record, dst, n);
    } catch (const std::exception& e) {
      throw CheckpointError(fmt::format("{}: cannot read record {} of the archive", name, record));
    }
  };
  const auto read_whole = [&](const std::string& record) {
    std::string bytes(record_size(record), '\0');
    records.read(record, bytes.data(), bytes.size());
    return bytes;
  };
  LATHE_CHECK(zip->hasRecord("data.pkl"), CheckpointError,
              "{}: the archive has no data.pkl; is it a TorchScript module (torch.jit.save)? Save "
              "model.state_dict() with torch.save instead",
              name);
  bool big_endian = std::endian::native == std::endian::big;  // no record: the writer's order
  if (zip->hasRecord("byteorder")) {
    const std::string order = read_whole("byteorder");
    LATHE_CHECK(order == "little" || order == "big", CheckpointError,
                "{}: the archive's byteorder record says '{}', expected 'little' or 'big'", name,
                order.substr(0, 32));
    big_endian = order == "big";
  }
  if constexpr (std::endian::native == std::endian::big) big_endian = !big_endian;
  const std::string pkl = read_whole("data.pkl");
  return unpickle_state_dict(pkl, records, name, big_endian);
}

LoadReport load_weights_any(torch::nn::Module& module, const std::filesystem::path& file,
                            bool strict) {
  return load_state_dict(module, load_state_dict_file(file), strict, file.string());
}

}  // namespace lathe::ckpt
