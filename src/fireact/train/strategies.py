"""Sharded training strategies (conf/trainer/fsdp.yaml, deepspeed.yaml), the same on GPUs (nccl) and
on CPU processes (gloo), where the test suite proves them against one process.

- `FSDP2`: Lightning's ModelParallelStrategy as plain data parallelism (every process one shard,
  no tensor parallelism); `shard_layers` (called by the LightningModule's `configure_model`)
  shards each decoder layer and then the rest of the model with torch's `fully_shard`.
  Lightning's older `FSDPStrategy` (FSDP1) is not used: its precision plugin refuses gradient
  clipping by norm (on GPUs too), and after `fit` its module holds flat shards.
- `DeepSpeed`: Lightning's DeepSpeedStrategy (ZeRO stage 2 or 3), which refuses anything but CUDA
  although DeepSpeed itself runs on CPU with gloo; and, under ZeRO-3, whose
  `lightning_module_state_dict` returns the empty placeholders of partitioned weights.

`full_state_dict(strategy)` gives the full weights on rank 0 under any strategy: what the train
stage exports.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
from lightning_fabric.utilities.seed import reset_seed
from pytorch_lightning.strategies import DeepSpeedStrategy, ModelParallelStrategy


class FSDP2(ModelParallelStrategy):
    """Fully sharded data parallel (torch's FSDP2) over every process of every node.

    Checkpoints are single files assembled on rank 0 (weights and optimizer state), so that one
    with only the trainable weights (a LoRA run's) resumes like any other.
    """

    def __init__(self, **kwargs: Any):
        super().__init__(data_parallel_size="auto", tensor_parallel_size=1, save_distributed_checkpoint=False, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes  # the parent's "auto" is one per node
        super().setup_environment()


def shard_layers(model: torch.nn.Module, mesh) -> None:
    """Shard each of `model`'s decoder layers (the classes transformers keeps whole when it splits
    a model across devices, `_no_split_modules`), then the rest of it, over `mesh`."""
    from torch.distributed.fsdp import fully_shard

    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model
    layer_classes = set(getattr(base, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in layer_classes]
    if not layers:
        raise ValueError(
            f"trainer=fsdp: {type(base).__name__} names no decoder layer class to shard (_no_split_modules); "
            f"use trainer=ddp or trainer=deepspeed for this model"
        )
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)


class DeepSpeed(DeepSpeedStrategy):
    """DeepSpeed ZeRO (`stage` 2: optimizer state and gradients partitioned; 3: the weights too),
    on CUDA as Lightning runs it and on CPU processes over gloo, which Lightning refuses.

    offload_optimizer: keep the optimizer state in CPU memory and step it there (ZeRO-Offload), with
        the LightningModule's own optimizer (torch's AdamW), which DeepSpeed would otherwise refuse
        in favour of its compiled CPU Adam: the same steps, more slowly.
    """

    def __init__(self, stage: int = 2, offload_optimizer: bool = False, **kwargs: Any):
        if stage not in (2, 3):
            raise ValueError(f"trainer.strategy.stage must be 2 or 3 (DeepSpeed ZeRO), got {stage}")
        super().__init__(stage=stage, offload_optimizer=offload_optimizer, **kwargs)
        if offload_optimizer:
            self.config.setdefault("zero_force_ds_cpu_optimizer", False)

    def setup_environment(self) -> None:
        if self.root_device.type == "cuda":
            return super().setup_environment()
        # Lightning's own check refuses every accelerator but CUDA; the rest of its set-up stands.
        super(DeepSpeedStrategy, self).setup_environment()

    def setup_distributed(self) -> None:
        if self.root_device.type == "cuda":
            return super().setup_distributed()
        # Lightning checks that CUDA device indices match local ranks; CPU devices have none.
        reset_seed()
        self.set_world_ranks()
        self._init_deepspeed_distributed()

    def _setup_model_and_optimizer(self, model, optimizer, lr_scheduler=None):
        import deepspeed

        # DeepSpeed takes the process's device index from `device_rank`, None on a CPU device.
        device_rank = self.root_device.index if self.root_device.index is not None else self.local_rank
        engine, ds_optimizer, _, _ = deepspeed.initialize(
            args=argparse.Namespace(device_rank=device_rank),
            config=self.config,
            model=model,
            model_parameters=[p for p in model.parameters() if p.requires_grad],
            optimizer=optimizer,
            lr_scheduler=lr_scheduler,
            dist_init_required=False,
        )
        return engine, ds_optimizer

    def full_state_dict(self) -> dict[str, Any]:
        """The LightningModule's full weights on rank 0 ({} elsewhere). Lightning's own
        `lightning_module_state_dict` holds empty placeholders for ZeRO-3's partitioned weights (and
        serves checkpoints, which DeepSpeed writes itself), so each weight is gathered here in turn."""
        state = self.lightning_module_state_dict()
        if not self.zero_stage_3:
            return state
        import deepspeed

        for name, param in self.lightning_module.named_parameters():
            with deepspeed.zero.GatheredParameters([param]):  # every rank takes part; rank 0 keeps it
                if self.is_global_zero:
                    state[name] = param.detach().cpu().clone()
        return state if self.is_global_zero else {}


def full_state_dict(strategy) -> dict[str, Any]:
    """The trained LightningModule's full weights on rank 0, whatever the strategy: one process and
    DDP hold them whole, FSDP2 gathers its shards (FSDP2 above), DeepSpeed its ZeRO-3 partitions."""
    if isinstance(strategy, DeepSpeed):
        return strategy.full_state_dict()
    return strategy.lightning_module_state_dict()


def shards_weights(strategy) -> bool:
    """Whether each process holds only a shard of the weights (FSDP2, ZeRO-3): a forward then
    needs every process at once."""
    return isinstance(strategy, FSDP2) or (isinstance(strategy, DeepSpeed) and strategy.zero_stage_3)
