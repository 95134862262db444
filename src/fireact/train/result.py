"""What a `train` run leaves for the stages after it: `TrainedModel`, written to and read from its
run folder (train_summary.json), and the checkpoint an interrupted run resumes from."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fireact.config_tree import dotted
from fireact.terminal import command, shown_path

SUMMARY = "train_summary.json"  # written last: the training is finished
CHECKPOINTS = "checkpoints"  # the run folder's checkpoints (conf/train.yaml: callbacks.checkpoint.dirpath)


@dataclass
class TrainedModel:
    """A finished training's summary: `model` (what it started from), `outputs` (where the trained
    weights are: adapter, model, merged, or a hosted job's fine_tuned_model) and its figures."""

    summary: dict

    def write(self, folder: Path) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / SUMMARY
        path.write_text(json.dumps(self.summary, indent=2))
        return path

    @classmethod
    def read(cls, folder: Path) -> TrainedModel | None:
        """The finished training in `folder`, or None when it has not finished there."""
        path = folder / SUMMARY
        return cls(json.loads(path.read_text())) if path.exists() else None

    def agent(self) -> dict:
        """How `evaluate` loads it: an adapter on the model it was trained from (the base model, or
        an improve step's starting model), a full model, or a hosted job's model (by name, so its
        format cannot sit beside its weights: the chat format it was trained in)."""
        outputs = self.summary["outputs"]
        if "adapter" in outputs:
            return {"model": {"path": self.summary["model"], "adapter": outputs["adapter"]}}
        if "fine_tuned_model" in outputs:
            return {"model": {"path": outputs["fine_tuned_model"]}, "method": {"format": "chat"}}
        return {"model": {"path": outputs["model"]}}

    def evaluate_command(self) -> str:
        """The command that evaluates it: `python -m fireact.evaluate model.path=... [model.adapter=...]`."""
        overrides = [f"{key}={shown_path(value) if key != 'method.format' else value}"
                     for key, value in dotted(self.agent()).items()]
        if self.summary.get("format") == "search_r1":  # its own method: ReAct's cannot prompt in it
            overrides.insert(0, "method=search_r1")
        return command("fireact.evaluate", *overrides)

    def folder(self) -> str:
        """The trained model as one folder (a full model, or the adapter merged): what an improve
        step starts from and keeps as its reference."""
        outputs = self.summary["outputs"]
        folder = outputs.get("model") or outputs.get("merged")
        if folder is None:
            raise ValueError("improve needs the fine-tuned model as one folder, but train wrote only a LoRA adapter; "
                             "add merge=true to the pipeline's command line, or use finetune=full")
        return folder


def last_checkpoint(folder: Path) -> Path | None:
    """The checkpoint an interrupted run in `folder` (or its checkpoints/) goes on from, if it wrote
    one: the newest of Lightning's last*.ckpt links. A run resumed from a checkpoint saved before its
    first periodic one links its later checkpoints as last-v1.ckpt, beside the stale last.ckpt."""
    links = [path for where in (folder / CHECKPOINTS, folder) for path in where.glob("last*.ckpt") if path.exists()]
    return max(links, key=lambda path: path.stat().st_mtime, default=None)  # stat: of what the link points to
