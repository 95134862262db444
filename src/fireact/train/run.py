"""The `train` stage, `train(cfg)`; started by `python -m fireact.train` (fireact/train/__main__.py, conf/train.yaml).

    python -m fireact.train                                    # LoRA, embedded model, 100 released HotpotQA trajectories
    python -m fireact.train data.path=outputs/build_data/<run> data.limit=null   # a build_data output
    python -m fireact.train finetune=full format=chat   # every weight; the model's chat template
    python -m fireact.train finetune=qlora trainer=gpu model=llama2_7b merge=true
    python -m fireact.train trainer=ddp trainer.devices=2      # 2 processes (CPU: gloo; GPU: nccl)
    python -m fireact.train trainer=fsdp finetune=full         # FSDP2: decoder layers sharded over the processes
    python -m fireact.train trainer=deepspeed trainer.strategy.stage=3   # DeepSpeed ZeRO-3
    python -m fireact.train finetune=openai model=gpt35        # a hosted fine-tuning job (OPENAI_API_KEY)
    python -m fireact.train resume=outputs/train/<run>         # go on from that run's last checkpoint
    python -m fireact.train objective=dpo data=preference data.path=outputs/generate/<samples run> model.path=<SFT model>
    python -m fireact.train objective=grpo data=questions model.path=<SFT model>   # online, the policy's own rollouts

Writes into the run folder: adapter/ (LoRA, QLoRA) or model/ (full), merged/ (merge=true),
checkpoints/, logs/ (the logger's curves), train_summary.json.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
import pytorch_lightning as pl
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig
from rich.table import Table
from transformers import AutoConfig, AutoTokenizer

from fireact import threads, tracking
from fireact.evaluate.plots import line_chart
from fireact.formats import write_trained_format
from fireact.llm.embedded import resolve_model_path
from fireact.terminal import show
from fireact.train.module import CausalLMModule
from fireact.train.openai_finetune import OpenAIFinetune
from fireact.train.peft_setup import FullFinetune
from fireact.train.result import SUMMARY, TrainedModel, last_checkpoint
from fireact.train.strategies import full_state_dict, shards_weights

log = logging.getLogger(__name__)


def train(cfg: DictConfig, callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Run the configured fine-tuning as one MLflow run (stage "train"; logger=mlflow puts the
    Lightning curves into it); returns the summary (also in train_summary.json). Two paths:
    a hosted job (finetune=openai: the API trains) or Lightning here (lora, qlora, full: the
    strategy loads the model and exports what was trained)."""
    tracking.check(cfg)  # the tracking store first: down, nothing else is done
    strategy = instantiate(cfg.finetune)
    hosted = isinstance(strategy, OpenAIFinetune)
    if hosted and callbacks:
        raise ValueError("Lightning callbacks do not apply to finetune=openai (the job runs on the API)")
    with threads.computing(cfg.threads):
        pl.seed_everything(cfg.seed, workers=True)
        if not hosted:  # bad settings or data stop here, before the run opens and the model loads
            check_training_length(cfg.trainer)
            check_learning_rate(cfg.optimizer)
            prepared = prepare(cfg)
        with tracking.start_run(cfg, stage="train"):
            summary = strategy.run_job(cfg) if hosted else fit_local(cfg, strategy, prepared, callbacks)
            tracking.log_metrics({k: v for k, v in summary.items()
                                  if isinstance(v, (int, float)) and not isinstance(v, bool)})
            if (Path(cfg.output_dir) / SUMMARY).exists():
                tracking.log_artifact(Path(cfg.output_dir) / SUMMARY)
    return summary


def check_training_length(trainer: DictConfig) -> None:
    """Some training: max_epochs null, -1 (no limit) or >= 1, and max_steps -1 (no limit) or >= 1."""
    epochs, steps = trainer.get("max_epochs"), trainer.get("max_steps", -1)
    if epochs is not None and (not _is_number(epochs) or (epochs < 1 and epochs != -1)):
        raise ValueError(f"trainer.max_epochs={epochs!r} trains nothing; set trainer.max_epochs=1 or more "
                         f"(or -1 with trainer.max_steps=N to stop after N steps)")
    if not _is_number(steps) or (steps < 1 and steps != -1):
        raise ValueError(f"trainer.max_steps={steps!r} trains nothing; set trainer.max_steps=1 or more, "
                         f"or -1 to train for trainer.max_epochs")


def check_learning_rate(optimizer: DictConfig) -> None:
    lr = optimizer.get("lr")
    if not _is_number(lr) or lr <= 0:
        raise ValueError(f"optimizer.lr={lr!r}: the learning rate must be a number > 0, e.g. optimizer.lr=1e-4 "
                         f"(the finetune preset sets one for its kind: LoRA 1e-3, full 2e-5)")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass
class Prepared:
    """What a local training reads before its model loads: the model's folder and tokenizer, the
    objective and the data, set up."""

    model_path: str
    tokenizer: Any
    objective: Any
    data: pl.LightningDataModule


def prepare(cfg: DictConfig) -> Prepared:
    """The tokenizer, the objective and the data, set up: a bad data path or a mismatch fails here."""
    model_path = resolve_model_path(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    context_length = getattr(AutoConfig.from_pretrained(model_path), "max_position_embeddings", None)
    objective = instantiate(cfg.objective)
    data = instantiate(cfg.data, tokenizer=tokenizer, context_length=context_length)
    if objective.trains_on != data.gives:
        raise ValueError(
            f"objective={objective.name} trains on {objective.trains_on}, but data={type(data).__name__} gives "
            f"{data.gives}; use objective=sft with a trajectory data config, objective=dpo with data=preference, "
            f"objective=grpo with data=questions"
        )
    data.iterations = getattr(objective, "num_iterations", 1)  # GRPO: optimizer steps on each step's rollouts
    data.setup("fit")
    return Prepared(model_path, tokenizer, objective, data)


def fit_local(cfg: DictConfig, strategy: FullFinetune, prepared: Prepared, callbacks: Sequence[pl.Callback] = ()) -> dict:
    """Train a local model with Lightning on the prepared data."""
    output_dir = Path(cfg.output_dir)
    model_path, tokenizer, objective, data = prepared.model_path, prepared.tokenizer, prepared.objective, prepared.data
    tracking.log_dataset(data.table(), name=data.dataset_name, source=data.dataset_source, context="training")
    ckpt_path = resolve_resume(cfg.resume, output_dir)

    no_validation = {} if data.val_set else {"limit_val_batches": 0}  # data.val_fraction=0 or too few examples
    trainer: pl.Trainer = instantiate(
        cfg.trainer,
        logger=instantiate(cfg.logger) if cfg.get("logger") else False,
        callbacks=[instantiate(c) for c in cfg.callbacks.values()] + list(callbacks),
        **no_validation,
    )
    if objective.trains_on == "questions" and shards_weights(trainer.strategy):
        raise ValueError(
            f"objective={objective.name} samples its rollouts from each process's policy one forward at a time, "
            f"which a strategy that shards the weights ({type(trainer.strategy).__name__}) would make every process "
            f"wait on the others; use trainer=cpu, gpu, ddp or deepspeed (ZeRO stage 2)"
        )
    module = CausalLMModule(
        strategy.load_model(model_path), objective=objective, tokenizer=tokenizer, optimizer=instantiate(cfg.optimizer),
        lr_schedule=cfg.lr_schedule.name, warmup_ratio=cfg.lr_schedule.warmup_ratio,
    )
    start = time.perf_counter()
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    train_seconds = time.perf_counter() - start
    weights = trained_weights(trainer)  # every process takes part in gathering sharded weights
    if not trainer.is_global_zero:
        return {}

    exported = strategy.export(module.model, tokenizer, output_dir, model_path, merge=cfg.merge, weights=weights)
    trained_format = instantiate(cfg.format).name
    for folder in exported.values():  # evaluate's method.format=auto prompts in the format trained in
        write_trained_format(folder, trained_format)
    world = trainer.world_size
    summary = {
        "finetune": strategy.kind,
        "objective": objective.name,
        "model": cfg.model.path,
        "format": trained_format,
        "optimizer_steps": trainer.global_step,
        "resumed_from": ckpt_path,
        "world_size": world,
        "loss_first": module.losses[0] if module.losses else None,
        "loss_last": module.losses[-1] if module.losses else None,
        "losses": module.losses,
        "val_loss": _metric(trainer, "val/loss"),
        **objective_summary(module, trainer),
        "step_metrics": module.metrics,  # the objective's own metrics at each step (GRPO: reward, rollout time)
        "train_seconds": train_seconds,
        "examples_per_s": module.examples_seen * world / train_seconds,
        "tokens_per_s": module.tokens_seen * world / train_seconds,
        "data": data.stats,
        "outputs": exported,
    }
    _write_summary(output_dir, summary)
    if (curves := plot_step_metrics(module.metrics, output_dir / "step_metrics.png")) is not None:
        tracking.log_artifact(curves)
    return summary


STEP_CURVES = ("reward", "em", "groups_without_signal", "clip_fraction", "ratio", "reward_accuracy")


def plot_step_metrics(metrics: list[dict[str, float]], path: Path) -> Path | None:
    """The objective's curves over the optimizer steps (GRPO: the rollouts' reward and EM, the share
    of groups without signal, the clip fraction and the importance ratio; DPO: reward accuracy) as
    a PNG; None when the objective has none (SFT)."""
    table = pd.DataFrame(metrics)
    columns = [name for name in STEP_CURVES if name in table]
    if not columns:
        return None
    table = table[columns].set_axis(pd.RangeIndex(1, len(table) + 1, name="optimizer step"))
    return line_chart(table, path, "the objective's metrics at each optimizer step", "value")


def trained_weights(trainer: pl.Trainer) -> dict[str, torch.Tensor]:
    """The trained model's full weights, named as in the model (not the LightningModule), on rank 0;
    whatever the strategy (one process, DDP, FSDP2's shards, DeepSpeed ZeRO-3's partitions). A
    weight tied to another (the output embedding to the input one) is left to the tie, as
    save_pretrained does: gathered, the two are separate copies."""
    model = trainer.lightning_module.model
    tied = {name for name, _ in model.named_parameters(remove_duplicate=False)} - {name for name, _ in model.named_parameters()}
    prefix = "model."
    state = full_state_dict(trainer.strategy)
    weights = {name[len(prefix):]: tensor for name, tensor in state.items() if name.startswith(prefix)}
    return {name: tensor for name, tensor in weights.items() if name not in tied}


def objective_summary(module: CausalLMModule, trainer: pl.Trainer, window: int = 10) -> dict[str, float | None]:
    """The objective's own metrics (DPO: reward accuracy, margin; GRPO: reward, rollout seconds): the
    mean over all steps, over the first and the last `window` steps (fewer when there are not
    twice as many), and on the validation data at the end (when there are). A metric some steps
    lack counts over the steps that have it."""
    names = dict.fromkeys(name for step in module.metrics for name in step)  # a skipped GRPO step has fewer
    summary: dict[str, float | None] = {}
    for name in names:
        values = [step[name] for step in module.metrics if name in step]
        part = max(1, min(window, len(values) // 2))
        summary[f"{name}_mean"] = sum(values) / len(values)
        summary[f"{name}_first"] = sum(values[:part]) / part
        summary[f"{name}_last"] = sum(values[-part:]) / part
        if trainer.callback_metrics.get(f"val/{name}") is not None:
            summary[f"val_{name}"] = _metric(trainer, f"val/{name}")
    return summary


def resolve_resume(resume, output_dir: Path) -> str | None:
    """resume: false, true (this run folder's last checkpoint), a run folder, or a .ckpt file."""
    if resume in (None, False):
        return None
    folder = output_dir if resume is True else Path(str(resume)).expanduser()
    if folder.is_file() or (folder.suffix == ".ckpt" and folder.is_dir()):  # DeepSpeed's checkpoints are folders
        return str(folder)
    if (checkpoint := last_checkpoint(folder)) is not None:
        return str(checkpoint)
    raise FileNotFoundError(
        f"resume={resume!r}: no last.ckpt under {folder}; pass resume=<the interrupted run's folder or its .ckpt>, "
        f"or rerun in that folder with hydra.run.dir=<folder> resume=true"
    )


def _metric(trainer: pl.Trainer, name: str) -> float | None:
    value = trainer.callback_metrics.get(name)
    return None if value is None else float(value)


def _write_summary(output_dir: Path, summary: dict) -> None:
    TrainedModel(summary).write(output_dir)
    table = Table(title=f"train: {summary['finetune']} {summary['objective']} on {summary['model']}")
    table.add_column("")
    table.add_column("value")
    shown = ["optimizer_steps", "loss_first", "loss_last", "val_loss", "examples_per_s", "tokens_per_s", "train_seconds"]
    shown += [key for key in summary if key.endswith(("_first", "_last")) and key not in shown]
    shown += [key for key in summary if key.startswith("val_") and key not in shown]
    for key in shown:
        value = summary[key]
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    for key, value in {**summary["data"], **summary["outputs"]}.items():
        table.add_row(key, str(value))
    show(table)
