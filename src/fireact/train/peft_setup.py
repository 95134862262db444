"""The local fine-tuning strategies (the `finetune=` group): full, LoRA, QLoRA.

A strategy only loads the model ready to train (`load_model`) and saves what was trained
(`export`); the training itself is one path for all of them, fireact.train.run.fit_local, with
the `optimizer` and `lr_schedule` configs (the hosted finetune=openai: fireact.train.openai_finetune).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM

from fireact.dtypes import torch_dtype
from fireact.logs import transformers_bars_off
from fireact.train import export

log = logging.getLogger(__name__)

class FullFinetune:
    """Every weight trained; exports the whole model to `<output>/model`.

    dtype: the weights' dtype when loaded (float32 on CPU; bfloat16 on GPUs).
    gradient_checkpointing: recompute activations in the backward pass (less memory, ~30% slower).
    """

    kind = "full"

    def __init__(self, dtype: str = "float32", gradient_checkpointing: bool = False):
        self.dtype = torch_dtype(dtype, "finetune.dtype")
        self.gradient_checkpointing = gradient_checkpointing

    def load_base(self, path: str) -> torch.nn.Module:
        with transformers_bars_off(path):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype)
        return self._prepare(model)

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        model.config.use_cache = False  # the KV cache is for generation, not training
        if self.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.train()  # from_pretrained returns eval mode (dropout off)
        return model

    def load_model(self, path: str) -> torch.nn.Module:
        return self.load_base(path)

    def export(self, model, tokenizer, output_dir: Path, base_path: str, merge: bool,
               weights: dict[str, torch.Tensor] | None = None) -> dict[str, str]:
        """Save what was trained; `weights`: the full weights when the model's own are sharded."""
        return {"model": str(export.save(model, tokenizer, output_dir / "model", weights))}


class LoraFinetune(FullFinetune):
    """LoRA adapters on the named modules; exports the adapter (and the merged model if asked).

    r, alpha, dropout: the LoRA rank, scale (alpha / r) and dropout.
    target_modules: module names to adapt (q_proj... for Llama-architecture models), or a
        PEFT pattern string such as "all-linear".
    """

    kind = "lora"

    def __init__(
        self,
        r: int = 8,
        alpha: int = 16,
        dropout: float = 0.05,
        target_modules: Sequence[str] | str = ("q_proj", "k_proj", "v_proj", "o_proj"),
        **common,
    ):
        super().__init__(**common)
        self.r, self.alpha, self.dropout = r, alpha, dropout
        self.target_modules = target_modules if isinstance(target_modules, str) else list(target_modules)

    def load_model(self, path: str) -> torch.nn.Module:
        from peft import LoraConfig, get_peft_model

        model = self.load_base(path)
        check_target_modules(model, self.target_modules)
        config = LoraConfig(
            r=self.r, lora_alpha=self.alpha, lora_dropout=self.dropout,
            target_modules=self.target_modules, task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, config)
        trainable, total = model.get_nb_trainable_parameters()
        log.info("LoRA: %d of %d parameters trainable (%.2f%%)", trainable, total, 100 * trainable / total)
        return model

    def export(self, model, tokenizer, output_dir: Path, base_path: str, merge: bool,
               weights: dict[str, torch.Tensor] | None = None) -> dict[str, str]:
        adapter = export.save(model, tokenizer, output_dir / "adapter", weights)
        paths = {"adapter": str(adapter)}
        if merge:
            paths["merged"] = str(export.merge_adapter(base_path, adapter, tokenizer, output_dir / "merged", self.dtype))
        return paths


class QLoraFinetune(LoraFinetune):
    """LoRA on a 4-bit base quantized by bitsandbytes (runs on CPU with bitsandbytes >= 0.49).

    quant_type: "nf4" or "fp4"; double_quant: quantize the quantization constants too;
    compute_dtype: the dtype the 4-bit layers compute in.
    The merged export (merge=true) merges into a full-precision copy of the base, not the 4-bit one.
    """

    kind = "qlora"

    def __init__(self, quant_type: str = "nf4", double_quant: bool = True, compute_dtype: str = "float32", **lora):
        super().__init__(**lora)
        self.quant_type, self.double_quant = quant_type, double_quant
        self.compute_dtype = torch_dtype(compute_dtype, "finetune.compute_dtype")

    def load_base(self, path: str) -> torch.nn.Module:
        from peft import prepare_model_for_kbit_training
        from transformers import BitsAndBytesConfig

        quantization = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type=self.quant_type,
            bnb_4bit_use_double_quant=self.double_quant, bnb_4bit_compute_dtype=self.compute_dtype,
        )
        with transformers_bars_off(path):
            model = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, quantization_config=quantization)
        model = prepare_model_for_kbit_training(
            model, use_gradient_checkpointing=self.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        model.config.use_cache = False
        model.train()
        return model


def check_target_modules(model: torch.nn.Module, target_modules: Sequence[str] | str) -> None:
    """Fail before training when a LoRA target names no module of the model."""
    if isinstance(target_modules, str):  # a PEFT pattern ("all-linear", a regex): PEFT checks it
        return
    names = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    unknown = [t for t in target_modules if t not in names]
    if unknown:
        linear = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ValueError(
            f"finetune.target_modules names {unknown}, which this model ({type(model).__name__}) does not have; "
            f"its linear layers are {linear}; set finetune.target_modules to some of them"
        )
