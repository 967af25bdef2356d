#include "data/hf_bpe.h"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <queue>

#include "data/utf8.h"

namespace ll::hf {

namespace {

uint64_t mix(uint64_t h) {
  h ^= h >> 31;
  h *= 0xBF58476D1CE4E5B9ull;
  h ^= h >> 29;
  return h;
}

uint64_t hash_bytes(std::string_view s) {
  uint64_t h = 0x9E3779B97F4A7C15ull ^ s.size();
  size_t i = 0;
  for (; i + 8 <= s.size(); i += 8) {
    uint64_t w;
    std::memcpy(&w, s.data() + i, 8);
    h = mix(h ^ w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, s.data() + i, s.size() - i);
  return mix(h ^ tail ^ 0x94D049BB133111EBull);
}

// Per-thread cache of encoded words: open addressing over (hash, key, ids) kept in flat buffers; cleared when full.
class WordCache {
 public:
  static constexpr size_t kSlots = size_t(1) << 16, kMaxEntries = kSlots / 2, kMaxWordBytes = 128;

  // The cached ids of `word` (nullptr when absent); *count gets their number.
  const int32_t* find(uint64_t owner, std::string_view word, uint64_t h, size_t* count) {
    if (owner != owner_) reset(owner);
    for (size_t s = h & (kSlots - 1);; s = (s + 1) & (kSlots - 1)) {
      const uint32_t e = slots_[s];
      if (e == kEmpty) return nullptr;
      const Entry& en = entries_[e];
      if (en.hash == h && en.key_len == word.size() && std::memcmp(keys_.data() + en.key_off, word.data(), word.size()) == 0) {
        *count = en.ids_len;
        return ids_.data() + en.ids_off;
      }
    }
  }
  void insert(std::string_view word, uint64_t h, const int32_t* ids, size_t count) {
    if (word.size() > kMaxWordBytes) return;
    if (entries_.size() >= kMaxEntries) reset(owner_);
    size_t s = h & (kSlots - 1);
    while (slots_[s] != kEmpty) s = (s + 1) & (kSlots - 1);
    slots_[s] = uint32_t(entries_.size());
    entries_.push_back({h, uint32_t(keys_.size()), uint32_t(word.size()), uint32_t(ids_.size()), uint32_t(count)});
    keys_.append(word);
    ids_.insert(ids_.end(), ids, ids + count);
  }

 private:
  static constexpr uint32_t kEmpty = 0xFFFFFFFFu;
  struct Entry {
    uint64_t hash;
    uint32_t key_off, key_len, ids_off, ids_len;
  };
  void reset(uint64_t owner) {
    owner_ = owner;
    slots_.assign(kSlots, kEmpty);
    entries_.clear();
    keys_.clear();
    ids_.clear();
  }
  uint64_t owner_ = 0;
  std::vector<uint32_t> slots_ = std::vector<uint32_t>(kSlots, kEmpty);
  std::vector<Entry> entries_;
  std::string keys_;
  std::vector<int32_t> ids_;
};

std::atomic<uint64_t> next_cache_owner{1};

constexpr size_t kShortWord = 48;

// GPT-2's byte-to-character table: printable Latin-1 bytes stand for themselves, the others for U+0100 upwards.
struct ByteLevelTable {
  char32_t to_char[256];
  ByteLevelTable() {
    char32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
      to_char[b] = printable ? char32_t(b) : next++;
    }
  }
};
const ByteLevelTable& byte_table() {
  static const ByteLevelTable t;
  return t;
}

}  // namespace

char32_t byte_level_char(unsigned char b) { return byte_table().to_char[b]; }

int byte_level_byte(char32_t c) {
  if (c < 256) {
    const bool printable = (c >= '!' && c <= '~') || (c >= 0xA1 && c <= 0xAC) || (c >= 0xAE);
    return printable ? int(c) : -1;
  }
  for (int b = 0; b < 256; ++b)
    if (byte_table().to_char[b] == c) return b;
  return -1;
}

// (left, right) symbol ids → (rank, merged id), open addressing on a power-of-two table.
struct BpeModel::MergeMap {
  struct Slot {
    uint64_t key = ~uint64_t(0);
    uint32_t rank = 0;
    int32_t id = -1;
  };
  std::vector<Slot> slots;
  size_t mask = 0;
  explicit MergeMap(size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 16) cap <<= 1;
    slots.resize(cap);
    mask = cap - 1;
  }
  static uint64_t key(int32_t a, int32_t b) { return (uint64_t(uint32_t(a)) << 32) | uint32_t(b); }
  void put(int32_t a, int32_t b, uint32_t rank, int32_t id) {  // a later duplicate replaces the earlier one
    const uint64_t k = key(a, b);
    size_t s = mix(k) & mask;
    while (slots[s].key != ~uint64_t(0) && slots[s].key != k) s = (s + 1) & mask;
    slots[s] = {k, rank, id};
  }
  const Slot* get(int32_t a, int32_t b) const {
    const uint64_t k = key(a, b);
    for (size_t s = mix(k) & mask;; s = (s + 1) & mask) {
      if (slots[s].key == k) return &slots[s];
      if (slots[s].key == ~uint64_t(0)) return nullptr;
    }
  }
};

BpeModel::BpeModel(const JsonAt& j, bool byte_level)
    : byte_level_(byte_level), cache_owner_(next_cache_owner.fetch_add(1)) {
  LL_CHECK(j.type() == "BPE", j.where, ": model type `", j.type(),
           "` is not supported (supported: BPE; WordPiece, Unigram and WordLevel are not implemented)");
  if (j.has("dropout")) {
    const Json& d = j.at("dropout").value;
    LL_CHECK(d.is_number() && d.get<double>() == 0.0, j.where,
             ".dropout: BPE dropout makes encoding random and is not supported (expected null or 0)");
  }
  fuse_unk_ = j.boolean_or("fuse_unk", false);
  byte_fallback_ = j.boolean_or("byte_fallback", false);
  ignore_merges_ = j.boolean_or("ignore_merges", false);
  prefix_ = j.str_or("continuing_subword_prefix", "");
  suffix_ = j.str_or("end_of_word_suffix", "");

  const JsonAt vocab = j.at("vocab");
  LL_CHECK(vocab.value.is_object(), vocab.where, ": expected an object of token → id, got ", vocab.value.type_name());
  LL_CHECK(!vocab.value.empty(), vocab.where, ": the vocabulary is empty");
  vocab_.reserve(vocab.value.size());
  int64_t max_id = -1;
  for (auto it = vocab.value.begin(); it != vocab.value.end(); ++it) {
    LL_CHECK(it.value().is_number_integer() && it.value().get<int64_t>() >= 0 && it.value().get<int64_t>() < (1 << 30),
             vocab.where, ": token `", it.key(), "` has id ", it.value().dump(), " (expected an integer in [0, 2^30))");
    const int32_t id = int32_t(it.value().get<int64_t>());
    vocab_.emplace(it.key(), id);
    max_id = std::max<int64_t>(max_id, id);
  }
  id_to_token_.assign(size_t(max_id + 1), std::string());
  has_id_.assign(size_t(max_id + 1), false);
  for (const auto& [token, id] : vocab_) {
    id_to_token_[size_t(id)] = token;
    has_id_[size_t(id)] = true;
  }

  if (j.has("unk_token")) {
    const std::string unk = j.str("unk_token");
    const auto it = vocab_.find(unk);
    LL_CHECK(it != vocab_.end(), j.where, ".unk_token: `", unk, "` is not in the vocabulary");
    unk_id_ = it->second;
  }
  for (int b = 0; b < 256; ++b) {
    char name[8];
    std::snprintf(name, sizeof name, "<0x%02X>", b);
    const auto it = vocab_.find(name);
    byte_fallback_id_[b] = it == vocab_.end() ? -1 : it->second;
    std::string c;
    append_utf8(byte_level_char(static_cast<unsigned char>(b)), &c);
    const auto bt = vocab_.find(c);
    byte_symbol_[b] = bt == vocab_.end() ? -1 : bt->second;
  }
  if (!byte_level_ && prefix_.empty() && suffix_.empty())
    for (const auto& [token, id] : vocab_) {
      char32_t cp;
      if (!token.empty() && utf8_decode(token, 0, &cp) == token.size()) char_id_.emplace(cp, id);
    }
  if (byte_level_ && ignore_merges_)
    for (const auto& [token, id] : vocab_) {
      std::string raw;
      bool ok = true;
      char32_t cp;
      for (size_t i = 0; i < token.size() && ok;) {
        const size_t n = utf8_decode(token, i, &cp);
        const int b = n ? byte_level_byte(cp) : -1;
        ok = b >= 0;
        raw.push_back(char(b));
        i += n ? n : 1;
      }
      if (ok) raw_vocab_.emplace(raw, id);
    }

  const JsonAt merges = j.at("merges");
  const Json& list = merges.array();
  merges_ = std::make_unique<MergeMap>(list.size());
  auto id_of = [&](const std::string& token, size_t i, const char* what) {
    const auto it = vocab_.find(token);
    LL_CHECK(it != vocab_.end(), merges.where, "[", i, "]: ", what, " `", token, "` is not in the vocabulary");
    return it->second;
  };
  for (size_t i = 0; i < list.size(); ++i) {
    const Json& m = list[i];
    std::string a, b;
    if (m.is_string()) {
      const std::string s = m.get<std::string>();
      const size_t space = s.find(' ');
      LL_CHECK(space != std::string::npos && s.find(' ', space + 1) == std::string::npos, merges.where, "[", i, "]: `",
               s, "` is not two tokens separated by one space");
      a = s.substr(0, space);
      b = s.substr(space + 1);
    } else {
      LL_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(), merges.where, "[", i,
               "]: expected \"a b\" or [\"a\", \"b\"], got ", m.dump());
      a = m[0].get<std::string>();
      b = m[1].get<std::string>();
    }
    const int32_t ia = id_of(a, i, "token"), ib = id_of(b, i, "token");
    // The merged token drops the right part's continuing_subword_prefix.
    const std::string joined = a + (b.compare(0, prefix_.size(), prefix_) == 0 ? b.substr(prefix_.size()) : b);
    merges_->put(ia, ib, uint32_t(i), id_of(joined, i, "merged token"));
  }
}

BpeModel::~BpeModel() = default;

int32_t BpeModel::token_to_id(std::string_view token) const {
  const auto it = vocab_.find(std::string(token));
  return it == vocab_.end() ? -1 : it->second;
}

bool BpeModel::id_to_token(int32_t id, std::string* token) const {
  if (id < 0 || size_t(id) >= id_to_token_.size() || !has_id_[size_t(id)]) return false;
  *token = id_to_token_[size_t(id)];
  return true;
}

// tokenizers' merge_word for one character (or, byte-level, one byte's character) `s`.
void BpeModel::add_char(std::string_view s, bool first, bool last, std::vector<int32_t>* symbols,
                        bool* has_unk) const {
  int32_t id = -1;
  std::string spelled;  // the character as the vocabulary spells it, prefix and suffix included
  if (!prefix_.empty() || !suffix_.empty()) {
    if (!first) spelled = prefix_;
    if (byte_level_) append_utf8(byte_level_char(static_cast<unsigned char>(s[0])), &spelled);
    else spelled += s;
    if (last) spelled += suffix_;
    id = token_to_id(spelled);
  } else if (byte_level_) {
    id = byte_symbol_[static_cast<unsigned char>(s[0])];
    if (id < 0) append_utf8(byte_level_char(static_cast<unsigned char>(s[0])), &spelled);
  } else {
    char32_t cp = 0;
    utf8_decode(s, 0, &cp);
    const auto it = char_id_.find(cp);
    id = it == char_id_.end() ? -1 : it->second;
    if (id < 0) spelled = std::string(s);
  }
  if (id >= 0) {
    if (*has_unk) symbols->push_back(unk_id_), *has_unk = false;
    symbols->push_back(id);
    return;
  }
  if (byte_fallback_) {
    bool all = true;
    for (unsigned char b : spelled) all = all && byte_fallback_id_[b] >= 0;
    if (all) {  // (tokenizers adds these without first emitting a pending unk)
      for (unsigned char b : spelled) symbols->push_back(byte_fallback_id_[b]);
      return;
    }
  }
  if (unk_id_ < 0) return;  // no unk token: the character is dropped, as tokenizers does
  if (*has_unk && !fuse_unk_) symbols->push_back(unk_id_);
  *has_unk = true;
}

void BpeModel::initial_symbols(std::string_view word, std::vector<int32_t>* symbols) const {
  symbols->clear();
  bool has_unk = false;
  if (byte_level_) {
    if (prefix_.empty() && suffix_.empty()) {
      bool all = true;
      for (unsigned char b : word) all = all && byte_symbol_[b] >= 0;
      if (all) {
        for (unsigned char b : word) symbols->push_back(byte_symbol_[b]);
        return;
      }
    }
    for (size_t i = 0; i < word.size(); ++i)
      add_char(word.substr(i, 1), i == 0, i + 1 == word.size(), symbols, &has_unk);
  } else {
    char32_t cp;
    for (size_t i = 0; i < word.size();) {
      const size_t n = std::max<size_t>(1, utf8_decode(word, i, &cp));
      add_char(word.substr(i, n), i == 0, i + n >= word.size(), symbols, &has_unk);
      i += n;
    }
  }
  if (has_unk) symbols->push_back(unk_id_);
}

// Short words: an array of pair ranks, the smallest (leftmost on ties) merged until none is left.
void BpeModel::merge(std::vector<int32_t>& sym) const {
  if (sym.size() > kShortWord) return merge_long(sym);
  constexpr uint32_t kNone = ~uint32_t(0);
  uint32_t rank[kShortWord];
  int32_t merged[kShortWord];
  size_t n = sym.size();
  auto look = [&](size_t i) {
    const MergeMap::Slot* s = merges_->get(sym[i], sym[i + 1]);
    rank[i] = s ? s->rank : kNone;
    merged[i] = s ? s->id : -1;
  };
  for (size_t i = 0; i + 1 < n; ++i) look(i);
  while (n > 1) {
    size_t best = 0;
    for (size_t i = 1; i + 1 < n; ++i)
      if (rank[i] < rank[best]) best = i;
    if (rank[best] == kNone) break;
    sym[best] = merged[best];
    for (size_t i = best + 1; i + 1 < n; ++i) {
      sym[i] = sym[i + 1];
      rank[i] = rank[i + 1];
      merged[i] = merged[i + 1];
    }
    --n;
    if (best + 1 < n) look(best);
    else rank[best] = kNone;
    if (best > 0) look(best - 1);
  }
  sym.resize(n);
}

// Long words: tokenizers' algorithm — a heap of (rank, position) with stale entries skipped, symbols linked.
void BpeModel::merge_long(std::vector<int32_t>& sym) const {
  const size_t n = sym.size();
  std::vector<int32_t> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (size_t i = 0; i < n; ++i) prev[i] = int32_t(i) - 1, next[i] = i + 1 < n ? int32_t(i + 1) : -1;
  struct Item {
    uint32_t rank;
    uint32_t pos;
    int32_t id;
    bool operator<(const Item& o) const { return rank != o.rank ? rank > o.rank : pos > o.pos; }  // min-heap
  };
  std::priority_queue<Item> heap;
  for (size_t i = 0; i + 1 < n; ++i)
    if (const MergeMap::Slot* s = merges_->get(sym[i], sym[i + 1])) heap.push({s->rank, uint32_t(i), s->id});
  while (!heap.empty()) {
    const Item top = heap.top();
    heap.pop();
    const size_t p = top.pos;
    if (!alive[p] || next[p] < 0) continue;
    const size_t q = size_t(next[p]);
    const MergeMap::Slot* s = merges_->get(sym[p], sym[q]);
    if (!s || s->id != top.id) continue;  // stale: the pair changed since
    sym[p] = top.id;
    alive[q] = false;
    next[p] = next[q];
    if (next[q] >= 0) prev[size_t(next[q])] = int32_t(p);
    if (prev[p] >= 0)
      if (const MergeMap::Slot* l = merges_->get(sym[size_t(prev[p])], sym[p]))
        heap.push({l->rank, uint32_t(prev[p]), l->id});
    if (next[p] >= 0)
      if (const MergeMap::Slot* r = merges_->get(sym[p], sym[size_t(next[p])])) heap.push({r->rank, uint32_t(p), r->id});
  }
  size_t k = 0;
  for (size_t i = 0; i < n; ++i)
    if (alive[i]) sym[k++] = sym[i];
  sym.resize(k);
}

void BpeModel::encode_word(std::string_view word, std::vector<int32_t>* out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    const auto& table = byte_level_ ? raw_vocab_ : vocab_;
    const auto it = table.find(std::string(word));
    if (it != table.end()) {
      out->push_back(it->second);
      return;
    }
  }
  thread_local WordCache cache;
  thread_local std::vector<int32_t> symbols;
  const uint64_t h = hash_bytes(word);
  size_t count = 0;
  if (const int32_t* hit = cache.find(cache_owner_, word, h, &count)) {
    out->insert(out->end(), hit, hit + count);
    return;
  }
  initial_symbols(word, &symbols);
  merge(symbols);
  cache.insert(word, h, symbols.data(), symbols.size());
  out->insert(out->end(), symbols.begin(), symbols.end());
}

}  // namespace ll::hf
