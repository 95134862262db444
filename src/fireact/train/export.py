"""Writing what was trained, in the forms the backends load directly.

- adapter folder (PEFT: adapter_config.json + adapter_model.safetensors) plus the tokenizer:
  the `hf` backend's model.adapter, vLLM's LoRARequest(name, id, folder).
- merged / full model folder (save_pretrained) plus the tokenizer: the `hf` backend's
  model.path, `vllm serve <folder>`.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from fireact.logs import transformers_bars_off


def save(model, tokenizer, folder: Path, weights: dict[str, torch.Tensor] | None = None) -> Path:
    """A PeftModel saves its adapter only; a plain model saves every weight. `weights`: the full
    weights by name when the model's own are sharded (fireact.train.run.trained_weights)."""
    model.config.use_cache = True  # turned off for training; generation wants it back
    with transformers_bars_off():
        model.save_pretrained(folder, state_dict=weights)
    tokenizer.save_pretrained(folder)
    return folder


def merge_adapter(base_path: str, adapter: Path, tokenizer, folder: Path, dtype: torch.dtype) -> Path:
    """Merge `adapter` into a fresh full-precision copy of the base model and save it.

    Merging into the training copy would not do for QLoRA (its base is 4-bit), so the base is
    loaded again, which also leaves the trained model untouched.
    """
    from peft import PeftModel

    with transformers_bars_off(base_path):
        base = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype)
    merged = PeftModel.from_pretrained(base, str(adapter)).merge_and_unload()
    return save(merged, tokenizer, folder)
