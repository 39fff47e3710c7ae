"""Model stage: load a folder safely, attach a head, choose which parameters train."""

from .load import (
                      auto_class_of,
                      check_model_folder,
                      load_finetuned,
                      load_for_task,
                      load_tokenizer,
                      packaged_minilm,
                      resolve_model_path,
                      spec_of,
)
from .methods import (
                      METHODS,
                      apply_method,
                      check_qlora,
                      count_parameters,
                      encoder_layers,
                      head_parameter_names,
                      is_no_decay,
                      layer_index,
                      linear_module_names,
                      lora_targets,
                      model_type,
                      unwrap_for_saving,
)

__all__ = ["auto_class_of", "check_model_folder", "load_finetuned", "load_for_task", "load_tokenizer",
           "packaged_minilm", "resolve_model_path", "spec_of", "METHODS", "apply_method", "check_qlora",
           "count_parameters", "encoder_layers", "head_parameter_names", "is_no_decay", "layer_index",
           "linear_module_names", "lora_targets", "model_type", "unwrap_for_saving"]
