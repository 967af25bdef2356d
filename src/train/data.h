// Training batches on the host. Two sources:
//  * PretrainSource: LongLoRA's packed rows — the token stream cut into rows of L tokens across document
//    boundaries, every row scored on its L−1 next-token targets; rows visited in a fresh seeded shuffle per epoch.
//  * SftSource: LongAlpaca examples, one per row, prompt (and BOS) masked to −100, truncated at L, not packed.
// Both expose their position (epoch, index) so a resumed run reads exactly the rows it would have read.
#pragma once
#include <cstdint>
#include <cstdio>
#include <memory>
#include <string>
#include <vector>

#include "data/chat_template.h"
#include "data/token_file.h"

namespace ll {

class Tokenizer;

struct HostBatch {
  int64_t batch = 0, seq_len = 0;      // rows and tokens per row of this batch
  std::vector<int32_t> tokens;         // [batch·seq_len]
  std::vector<int32_t> targets;        // [batch·seq_len], shifted: targets[t] is the token after t, or −100
  int64_t scored() const;
};

struct DataPosition {
  int64_t epoch = 0;  // completed passes over the data
  int64_t index = 0;  // next row of this epoch's order
};

class BatchSource {
 public:
  virtual ~BatchSource() = default;
  virtual void next(HostBatch& out) = 0;
  virtual int64_t rows_per_epoch() const = 0;
  DataPosition position() const { return pos_; }
  void seek(const DataPosition& p);
  // Data parallelism: a global micro-batch is `world` local ones, consecutive in the shuffled order; this rank
  // reads the rank-th. Every rank advances the position by the whole global micro-batch, so positions agree.
  void set_data_parallel(int rank, int world);

 protected:
  explicit BatchSource(uint64_t seed) : seed_(seed) {}
  // This rank's `count` rows of the next global micro-batch (world·count rows), advancing the position;
  // reshuffles at epoch boundaries.
  std::vector<int64_t> take_rows(int64_t count);

 private:
  void shuffle_for_epoch();
  int64_t take_row();
  uint64_t seed_;
  int rank_ = 0, world_ = 1;
  DataPosition pos_;
  std::vector<int64_t> order_;
  int64_t order_epoch_ = -1;
};

class PretrainSource final : public BatchSource {
 public:
  // Rows of seq_len tokens; the tail of the stream shorter than a row is not used.
  PretrainSource(std::shared_ptr<const TokenFile> file, int64_t seq_len, int64_t batch, uint64_t seed);
  void next(HostBatch& out) override;
  int64_t rows_per_epoch() const override { return rows_; }

 private:
  std::shared_ptr<const TokenFile> file_;
  int64_t seq_len_, batch_, rows_;
};

// One supervised example: full token ids and how many leading tokens (BOS + prompt) are masked.
struct SftExample {
  std::vector<int32_t> ids;
  int64_t prompt_tokens = 0;
};

// Builds an SFT example in a chat template (data/chat_template.h): the prompt (the user turn, generation prompt
// included) + the output + the end-of-turn token, truncated to max_len; labels of the first
// min(len(prompt ids), max_len) tokens are masked. With llama2 (the default) this is LongLoRA's exactly:
// BOS + encode(prompt + output) + EOS with data/documents.h's prompt.
SftExample make_sft_example(const Tokenizer& tok, const std::string& instruction, const std::string& input,
                            const std::string& output, int64_t max_len, const ChatStyle& style);
SftExample make_sft_example(const Tokenizer& tok, const std::string& instruction, const std::string& input,
                            const std::string& output, int64_t max_len);  // llama2 (LongLoRA's)

class SftSource final : public BatchSource {
 public:
  // Reads every example of a LongAlpaca .json list or .jsonl file (fields instruction, output, optional input)
  // and tokenizes it once. Rows are not padded, so the batch size must be 1; a row's length is its example's.
  // Examples whose BOS + prompt fills max_len score no target: they are dropped (counted, and reported on `log`
  // when given), since a row without targets would count as loss 0 in the mean of micro-batch means. Throws
  // naming the file when no example is left.
  SftSource(const std::string& path, const Tokenizer& tok, int64_t max_len, int64_t batch, uint64_t seed,
            std::FILE* log = nullptr, const ChatStyle* style = nullptr);  // style: llama2 when null
  void next(HostBatch& out) override;
  int64_t rows_per_epoch() const override { return int64_t(examples_.size()); }
  const std::vector<SftExample>& examples() const { return examples_; }
  int64_t dropped() const { return dropped_; }  // examples left out because their prompt fills max_len

 private:
  std::vector<SftExample> examples_;
  int64_t dropped_ = 0;
};

}  // namespace ll
