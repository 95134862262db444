"""Write a built training set: the trajectories, the same in Alpaca and chat form, a manifest.

Files in the output folder:
- trajectories.jsonl: one fireact.trajectory.Trajectory per line (what `train` reads).
- alpaca.json: Alpaca records {instruction, input, output}, as the released alpaca_format sets.
- chat.jsonl: {"messages": [...]} per line: user question, assistant "Thought/Action" turns,
  user "Observation: ..." turns. This one file serves both OpenAI fine-tuning (its chat
  format, as the released gpt_format sets) and local models through
  tokenizer.apply_chat_template, whose user/assistant roles are the same.
- manifest.json: sources with sha256, counts per task × method, seed, config, output hashes.
Every file is written in a fixed order with fixed formatting, so the same mix gives the same bytes.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from fireact.trajectory import Trajectory

from fireact.trajectory_files import write_alpaca, write_chat, write_jsonl

TRAJECTORIES, ALPACA, CHAT, MANIFEST = "trajectories.jsonl", "alpaca.json", "chat.jsonl", "manifest.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_dataset(out_dir: str | Path, trajectories: list[Trajectory]) -> dict[str, str]:
    """Write the three dataset files; returns {file name: sha256}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_jsonl(out_dir / TRAJECTORIES, trajectories)
    write_alpaca(out_dir / ALPACA, trajectories)
    write_chat(out_dir / CHAT, trajectories)
    return {name: sha256(out_dir / name) for name in (TRAJECTORIES, ALPACA, CHAT)}


def write_manifest(out_dir: str | Path, manifest: dict[str, Any]) -> Path:
    path = Path(out_dir) / MANIFEST
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    return path


def cell_table(counts) -> dict[str, dict[str, int]]:
    """{(task, method): k} -> {task: {method: k}} in sorted order, for JSON."""
    table: dict[str, dict[str, int]] = {}
    for (task, method), k in sorted(counts.items()):
        table.setdefault(task, {})[method] = k
    return table
