"""QLoRA on CPU: a 4-bit bitsandbytes base with LoRA on top trains, and its adapter loads on
the full-precision base (where the hf backend and vLLM put it). bitsandbytes is installed by
`make install` (the qlora extra): these tests never skip."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from fireact.train.run import train
from tests.train.conftest import train_config


def test_qlora_base_is_4bit(model_path):
    import bitsandbytes as bnb

    from fireact.train.peft_setup import QLoraFinetune

    model = QLoraFinetune().load_model(model_path)
    q_proj = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(q_proj.base_layer, bnb.nn.Linear4bit)
    assert q_proj.base_layer.weight.quant_state.quant_type == "nf4"


def test_qlora_trains_a_4bit_base_and_exports_a_loadable_adapter(shortest, model_path, write_trajectories, tmp_path):
    from peft import PeftModel

    out = tmp_path / "run"
    cfg = train_config(out, write_trajectories(shortest[:2]), "finetune=qlora", "trainer.max_epochs=3",
                       "optimizer.lr=2e-3", "merge=true")
    summary = train(cfg)
    assert summary["finetune"] == "qlora" and summary["optimizer_steps"] == 3
    assert summary["losses"][-1] < summary["losses"][0]

    base = AutoModelForCausalLM.from_pretrained(model_path)
    tuned = PeftModel.from_pretrained(base, str(out / "adapter"))
    lora_b = [p for name, p in tuned.named_parameters() if "lora_B" in name]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)  # trained: B starts at zero
    merged = AutoModelForCausalLM.from_pretrained(out / "merged")
    assert merged.model.layers[0].self_attn.q_proj.weight.dtype == torch.float32  # merged into full precision
