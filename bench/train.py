"""Training speed: LoRA on the embedded SmolLM2-135M over the released HotpotQA trajectories,
the project's Lightning module with length-grouped batches against a plain transformers
`Trainer` that pads every batch to the cutoff length (the paper's recipe), one epoch each,
same examples, LoRA settings, learning rate, schedule and batch size.

    .venv/bin/python bench/train.py                    # 32 examples, batch 4: 8 steps per side
    .venv/bin/python bench/train.py --examples 64 --json bench/train.json

--examples N   released trajectories used (data.limit), default 32
--cutoff L     tokens per example (data.max_length; the baseline pads every example to it), default 1024
--gradient-checkpointing on|off   finetune.gradient_checkpointing for both sides; default: the
               project's default (conf/finetune/lora.yaml: on). The activations kept for the backward
               pass (~1.9 MB a token in float32) are what puts a LoRA step of SmolLM2-135M over 3 GB;
               recomputing them costs one more forward pass
--json PATH    also write the figures there

Each side runs in its own process (so peak RSS is its own), baseline first, then ours.
"ours" is fireact.train's own path (the configured finetune method's fit, seeded like
`python -m fireact.train`), conf/train.yaml with the overrides in config() below.
Trained tokens are the non-pad tokens of the epoch (the same for both); losses are the mean
per-step training loss over the epoch (same examples, different order).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from fireact.paths import CONF_DIR

from memory import peak_rss_gb


def config(examples: int, cutoff: int, output_dir: str, checkpointing: str | None = None):
    overrides = [
        f"data.limit={examples}", "data.val_fraction=0", f"data.max_length={cutoff}", "~tracker", "logger=csv",
        "trainer.enable_checkpointing=false", "trainer.enable_progress_bar=false", "~callbacks.checkpoint",
        f"output_dir={output_dir}",
    ]
    if checkpointing:
        overrides.append(f"finetune.gradient_checkpointing={checkpointing == 'on'}")
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def run_ours(cfg) -> dict:
    import pytorch_lightning as pl

    from fireact.train.run import fit_local, prepare

    pl.seed_everything(cfg.seed, workers=True)  # as fireact.train.train does (the Trainer seeds itself)
    summary = fit_local(cfg, instantiate(cfg.finetune), prepare(cfg))
    return {"seconds": summary["train_seconds"], "examples": summary["data"]["train_examples"],
            "tokens": summary["data"]["train_tokens"], "losses": summary["losses"]}


def run_baseline(cfg) -> dict:
    from transformers import AutoTokenizer, DataCollatorForSeq2Seq, Trainer, TrainingArguments

    from fireact.llm.embedded import resolve_model_path
    from fireact.train.examples import IGNORE_INDEX

    model_path = resolve_model_path(cfg.model.path)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    data = instantiate(cfg.data, tokenizer=tokenizer)
    data.setup("fit")
    strategy = instantiate(cfg.finetune)
    model = strategy.load_model(model_path)
    args = TrainingArguments(
        output_dir=cfg.output_dir, per_device_train_batch_size=cfg.data.batch_size, num_train_epochs=1,
        learning_rate=cfg.optimizer.lr,
        weight_decay=cfg.optimizer.weight_decay,
        warmup_steps=int(cfg.lr_schedule.warmup_ratio * math.ceil(len(data.train_set) / cfg.data.batch_size)),
        lr_scheduler_type=cfg.lr_schedule.name, max_grad_norm=cfg.trainer.gradient_clip_val,
        logging_steps=1, save_strategy="no", report_to=[], seed=cfg.seed, use_cpu=True,
        disable_tqdm=True, remove_unused_columns=False,
    )
    pad_to_cutoff = DataCollatorForSeq2Seq(
        tokenizer, padding="max_length", max_length=cfg.data.max_length, label_pad_token_id=IGNORE_INDEX
    )
    trainer = Trainer(model=model, args=args, train_dataset=data.train_set, data_collator=pad_to_cutoff)
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    return {"seconds": seconds, "examples": data.stats["train_examples"], "tokens": data.stats["train_tokens"],
            "losses": losses}


def side(name: str, examples: int, cutoff: int, checkpointing: str | None) -> dict:
    with tempfile.TemporaryDirectory() as out:
        cfg = config(examples, cutoff, out, checkpointing)
        result = (run_ours if name == "ours" else run_baseline)(cfg)
    result["gradient_checkpointing"] = "on" if cfg.finetune.gradient_checkpointing else "off"
    result["peak_rss_gb"] = peak_rss_gb()
    result["tokens_per_s"] = result["tokens"] / result["seconds"]
    result["examples_per_s"] = result["examples"] / result["seconds"]
    result["mean_loss"] = sum(result["losses"]) / len(result["losses"])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--examples", type=int, default=32)
    parser.add_argument("--cutoff", type=int, default=1024)
    parser.add_argument("--gradient-checkpointing", choices=["on", "off"])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--side", choices=["baseline", "ours"], help=argparse.SUPPRESS)  # one side, in a child
    args = parser.parse_args()
    if args.side:
        print("RESULT " + json.dumps(side(args.side, args.examples, args.cutoff, args.gradient_checkpointing)),
              flush=True)
        return

    results = {}
    for name in ("baseline", "ours"):
        checkpointing = ["--gradient-checkpointing", args.gradient_checkpointing] if args.gradient_checkpointing else []
        child = subprocess.run(
            [sys.executable, __file__, "--side", name, "--examples", str(args.examples), "--cutoff", str(args.cutoff),
             *checkpointing],
            capture_output=True, text=True,
        )
        line = next((l for l in child.stdout.splitlines() if l.startswith("RESULT ")), None)
        if child.returncode != 0 or line is None:
            sys.exit(f"the {name} side failed:\n{child.stderr[-3000:]}")
        results[name] = r = json.loads(line[len("RESULT "):])
        print(f"  {name:8s} {r['seconds']:6.1f} s  {r['tokens_per_s']:7.1f} non-pad tok/s  "
              f"{r['examples_per_s']:.3f} examples/s  peak RSS {r['peak_rss_gb']:.2f} GB  mean loss {r['mean_loss']:.4f}",
              flush=True)
    ratio = results["ours"]["tokens_per_s"] / results["baseline"]["tokens_per_s"]
    print(f"ours/baseline {ratio:.2f}x non-pad tokens/s; mean loss ours {results['ours']['mean_loss']:.4f} "
          f"vs baseline {results['baseline']['mean_loss']:.4f}")
    if args.json:
        args.json.write_text(json.dumps({"settings": {"examples": args.examples, "cutoff": args.cutoff,
                                                      "gradient_checkpointing": results["ours"]["gradient_checkpointing"]},
                                         "machine": platform.platform(), "results": results, "ratio_tokens": ratio},
                                        indent=2))


if __name__ == "__main__":
    main()
