// export_trained_model: what a finished run leaves in output_dir (see train/session.h).
#include "io/hf_checkpoint.h"
#include "io/merge.h"
#include "io/peft.h"
#include "train/session.h"
#include "core/dtype_names.h"

namespace ll {

void export_trained_model(TrainingSession& s) {
  const TrainOptions& o = s.options;
  const ModelPlan& plan = s.plan;
  Backend& be = *s.be;
  Model& model = *s.model;
  const ModelOptions& mo = s.model_options;
  const bool lead = s.lead;
  // Exports by rank 0 (every rank helps gather under ZeRO-3): the adapter folder (LoRA) in output_dir, or the full
  // model as an HF folder.
  model.params().with_readable(/*trainable_only=*/o.low_rank_training, [&] {
    if (!lead) return;
    if (o.low_rank_training) {
      AdapterSaveOptions so;
      so.base_model_name_or_path = o.model_name_or_path.empty() ? o.model_config : o.model_name_or_path;
      so.record = LongLoraRecord{plan.config.rope_scaling_factor, o.model_max_length, plan.config.vocab_size};
      save_adapter(o.output_dir, model.params(), be, mo.lora, so);
    } else {
      HfSaveOptions so;
      so.dtype = DType::F32;
      so.copy_tokenizer_from = plan.hf_dir;
      so.info = plan.info;
      save_hf_folder(o.output_dir + "/model", model.params(), be, plan.config, so);
    }
  });
  // --save_merged: W + (α/r)·B·A folded in (after the adapter export, which needs the unmerged adapters), with
  // rope_scaling recorded in config.json, in the base's dtype.
  if (o.save_merged && o.low_rank_training) {
    model.params().with_readable(/*trainable_only=*/false, [&] {
      if (!lead) return;
      // A 4-bit base cannot take the adapter in place: a dense copy on the host (its linears dequantized) does.
      std::unique_ptr<Backend> host;
      std::unique_ptr<ParamStore> dense;
      if (mo.config.load_in_4bit) {
        host = create_backend("cpu");
        dense = dense_merged_copy(model.params(), be, plan.config, mo.lora, *host);
      } else {
        merge_lora(model.params(), be, mo.lora);
      }
      HfSaveOptions so;
      so.dtype = float_dtype_named(plan.info.torch_dtype).value_or(DType::F32);
      so.copy_tokenizer_from = plan.hf_dir;
      so.info = plan.info;
      save_hf_folder(o.output_dir + "/merged", dense ? *dense : model.params(), dense ? *host : be, plan.config, so);
    });
  }
  s.comm->barrier();
}

}  // namespace ll
