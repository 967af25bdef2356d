#include "train/data.h"

#include <algorithm>
#include <numeric>

#include "data/chat_template.h"
#include "data/documents.h"
#include "data/tokenizer.h"
#include "util/error.h"
#include "util/random.h"

namespace ll {

int64_t HostBatch::scored() const {
  int64_t n = 0;
  for (int32_t t : targets) n += t != -100;
  return n;
}

void BatchSource::seek(const DataPosition& p) {
  LL_CHECK(p.epoch >= 0 && p.index >= 0 && p.index <= rows_per_epoch(), "data position (epoch ", p.epoch, ", row ",
           p.index, ") is outside this dataset of ", rows_per_epoch(), " rows per epoch");
  pos_ = p;
}

void BatchSource::shuffle_for_epoch() {
  order_.resize(rows_per_epoch());
  std::iota(order_.begin(), order_.end(), 0);
  Rng rng(seed_ ^ (0xD1B54A32D192ED03ull * uint64_t(pos_.epoch + 1)));
  for (int64_t i = int64_t(order_.size()) - 1; i > 0; --i) std::swap(order_[i], order_[rng.below(uint64_t(i) + 1)]);
  order_epoch_ = pos_.epoch;
}

void BatchSource::set_data_parallel(int rank, int world) {
  LL_CHECK(world >= 1 && rank >= 0 && rank < world, "data parallel: rank ", rank, " of ", world);
  rank_ = rank;
  world_ = world;
}

std::vector<int64_t> BatchSource::take_rows(int64_t count) {
  std::vector<int64_t> mine;
  for (int r = 0; r < world_; ++r)
    for (int64_t i = 0; i < count; ++i) {
      const int64_t row = take_row();
      if (r == rank_) mine.push_back(row);
    }
  return mine;
}

int64_t BatchSource::take_row() {
  if (pos_.index >= rows_per_epoch()) pos_ = {pos_.epoch + 1, 0};
  if (order_epoch_ != pos_.epoch) shuffle_for_epoch();
  return order_[pos_.index++];
}

PretrainSource::PretrainSource(std::shared_ptr<const TokenFile> file, int64_t seq_len, int64_t batch, uint64_t seed)
    : BatchSource(seed), file_(std::move(file)), seq_len_(seq_len), batch_(batch) {
  LL_CHECK(seq_len_ >= 2 && batch_ >= 1, "pretraining data: need seq_len >= 2 and batch >= 1");
  rows_ = file_->size() / seq_len_;
  LL_CHECK(rows_ >= 1, "data file `", file_->path(), "` has ", file_->size(), " tokens, fewer than one row of ",
           seq_len_, " (model_max_length)");
}

void PretrainSource::next(HostBatch& out) {
  out.batch = batch_;
  out.seq_len = seq_len_;
  out.tokens.resize(batch_ * seq_len_);
  out.targets.resize(batch_ * seq_len_);
  const std::vector<int64_t> rows = take_rows(batch_);
  for (int64_t b = 0; b < batch_; ++b) {
    int32_t* row = out.tokens.data() + b * seq_len_;
    file_->read(rows[b] * seq_len_, seq_len_, row);
    int32_t* tgt = out.targets.data() + b * seq_len_;
    for (int64_t l = 0; l + 1 < seq_len_; ++l) tgt[l] = row[l + 1];
    tgt[seq_len_ - 1] = -100;
  }
}

SftExample make_sft_example(const Tokenizer& tok, const std::string& instruction, const std::string& input,
                            const std::string& output, int64_t max_len, const ChatStyle& style) {
  ChatExample chat = chat_sft_example(style, tok, instruction, input, output);
  SftExample ex;
  ex.ids = std::move(chat.full);
  if (int64_t(ex.ids.size()) > max_len) ex.ids.resize(max_len);
  ex.prompt_tokens = std::min<int64_t>(int64_t(chat.prompt.size()), int64_t(ex.ids.size()));
  return ex;
}

SftExample make_sft_example(const Tokenizer& tok, const std::string& instruction, const std::string& input,
                            const std::string& output, int64_t max_len) {
  ChatStyle style;  // llama2: LongLoRA's, which needs only BOS and EOS by id
  return make_sft_example(tok, instruction, input, output, max_len, style);
}

SftSource::SftSource(const std::string& path, const Tokenizer& tok, int64_t max_len, int64_t batch, uint64_t seed,
                     std::FILE* log, const ChatStyle* style)
    : BatchSource(seed) {
  const ChatStyle llama2;
  LL_CHECK(batch == 1, "SFT data: rows are not padded, so --per_device_train_batch_size must be 1 (got ", batch,
           "); use --gradient_accumulation_steps for larger batches");
  int64_t read = 0;
  read_sft_records(path, [&](SftRecord&& r) {
    ++read;
    SftExample ex = make_sft_example(tok, r.instruction, r.input, r.output, max_len, style ? *style : llama2);
    // Row position l is scored when l + 1 >= prompt_tokens and l + 1 < length (see next()).
    if (ex.prompt_tokens < int64_t(ex.ids.size())) examples_.push_back(std::move(ex));
  });
  LL_CHECK(read > 0, "SFT data `", path, "` holds no examples");
  dropped_ = read - int64_t(examples_.size());
  if (examples_.empty())
    fail("SFT data `", path, "`: all ", read, " examples have a prompt that fills the context (--model_max_length ",
         max_len, " tokens, BOS and the prompt template included), so no target token is left to train on; raise "
         "--model_max_length or shorten the prompts");
  if (dropped_ > 0 && log)
    std::fprintf(log, "SFT data %s: dropped %lld of %lld examples whose prompt fills the context (--model_max_length "
                 "%lld): no target token left to train on\n", path.c_str(), (long long)dropped_, (long long)read,
                 (long long)max_len);
}

void SftSource::next(HostBatch& out) {
  const SftExample& ex = examples_[take_rows(1)[0]];
  const int64_t L = int64_t(ex.ids.size());
  out.batch = 1;
  out.seq_len = L;
  out.tokens = ex.ids;
  out.targets.assign(L, -100);
  for (int64_t l = 0; l + 1 < L; ++l)
    if (l + 1 >= ex.prompt_tokens) out.targets[l] = ex.ids[l + 1];
}

}  // namespace ll
