// Importer for llama2.c's legacy ("version 0") checkpoint format, e.g. ../shared/assets/stories260K.bin.
//
// Layout (native little-endian): 7 int32 — dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size, seq_len
// (a negative vocab_size means the classifier is NOT shared with the token embedding) — then fp32 tensors, each
// [out, in] row-major like PyTorch, in this order:
//   token embedding [V, D] · attention RMS [n_layers, D] · wq [n_layers, D, D] · wk, wv [n_layers, Hkv·Dh, D]
//   · wo [n_layers, D, D] · FFN RMS [n_layers, D] · w1 [n_layers, F, D] · w2 [n_layers, D, F] · w3 [n_layers, F, D]
//   · final RMS [D] · freq_cis_real, freq_cis_imag [seq_len · Dh/2] each (unused) · classifier [V, D] if not shared.
// wq/wk rows are in Meta's interleaved-pair RoPE layout; the importer permutes them to Hugging Face's rotate-half
// layout, which is what the engine uses everywhere.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/backend.h"
#include "model/config.h"
#include "model/params.h"

namespace ll {

struct Llama2cHeader {
  int32_t dim = 0, hidden_dim = 0, n_layers = 0, n_heads = 0, n_kv_heads = 0, vocab_size = 0, seq_len = 0;
  bool shared_classifier() const { return vocab_size > 0; }
};

// Reads the header of `path` and checks it (positive sizes, heads dividing dim, even head dim, n_kv_heads dividing
// n_heads) and that the file size is exactly what the header implies. Throws ll::Error naming the file.
Llama2cHeader read_llama2c_header(const std::string& path);

// The architecture of a llama2.c checkpoint: rms_norm_eps 1e-5, rope_theta 10000, max_position_embeddings = seq_len,
// tie_word_embeddings = shared classifier.
ModelConfig llama2c_config(const Llama2cHeader& header);

// Loads the weights of `path` into `params` (allocated on `backend`), which must have been built from
// llama2c_config() of the same file (any LoRA / trainable settings; adapters are left untouched). Values are
// converted to the store's weight dtype. `permute_qk` = false skips the Meta → HF q/k row permutation (only useful
// to show that it matters).
void load_llama2c(const std::string& path, Backend& backend, ParamStore& params, bool permute_qk = true);

// Meta interleaved-pair → HF rotate-half row order of a q or k projection [n_heads·head_dim, in] (row-major), as in
// HF's convert_llama_weights_to_hf.py: w.view(n_heads, head_dim/2, 2, in).transpose(1, 2).reshape(out, in).
// Within each head, HF row j < head_dim/2 is Meta row 2j and HF row head_dim/2 + j is Meta row 2j + 1.
std::vector<float> permute_meta_to_hf_rows(const std::vector<float>& w, int64_t n_heads, int64_t rows, int64_t cols);

}  // namespace ll
