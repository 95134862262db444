"""Preference pairs as training batches (for objective=dpo): chosen rows first, then rejected.

A pair (fireact.data.pairs) is two trajectories for the same question, tokenized and masked
exactly as SFT examples (the same format, the prompt and observations masked), so the DPO
log-probabilities cover the agent's own tokens only. A batch of B pairs is 2B padded rows:
rows 0..B-1 the chosen trajectories, rows B..2B-1 their rejected partners.
"""

from __future__ import annotations

import logging

import pandas as pd
import torch

from fireact.data.pairs import load_pairs
from fireact.train.datamodule import TrajectoryDataModule

log = logging.getLogger(__name__)


class PreferenceDataModule(TrajectoryDataModule):
    """TrajectoryDataModule's settings, over pairs. path: a pairs.jsonl, or a generate output
    folder of sampled successes and failures (pairs built there, `pairs_per_question` at most
    per question, seeded). batch_size and limit count pairs."""

    gives = "pairs"

    def __init__(self, path: str, format, tokenizer, pairs_per_question: int = 4, **settings):
        super().__init__(path, format, tokenizer, **settings)
        self.pairs_per_question = pairs_per_question
        self.pad = self.collate
        self.collate = self.collate_pairs

    def collate_pairs(self, records: list[dict]) -> dict:
        return self.pad([r["chosen"] for r in records] + [r["rejected"] for r in records])

    def table(self) -> pd.DataFrame:
        """The pairs, a row each (chosen and rejected as ReAct text)."""
        return pd.DataFrame([{"task": p.chosen.task, "method": p.chosen.method, "qid": p.chosen.qid,
                              "question": p.chosen.question, "chosen": p.chosen.react_text(),
                              "rejected": p.rejected.react_text()} for p in self.pairs])

    def record_length(self, record: dict) -> int:
        return max(len(record["chosen"]["input_ids"]), len(record["rejected"]["input_ids"]))

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        pairs = load_pairs(self.path, self.pairs_per_question, self.seed)[: self.limit]
        self.pairs = pairs
        encoded = [(self.encode(p.chosen), self.encode(p.rejected)) for p in pairs]
        truncated = sum(c.truncated or r.truncated for c, r in encoded)
        if truncated and self.too_long == "error":
            raise ValueError(f"{truncated} of {len(pairs)} pairs in {self.path} hold a trajectory longer than "
                             f"data.max_length={self.max_length} tokens; raise data.max_length or set data.too_long=truncate")
        usable = [(p, c, r) for p, (c, r) in zip(pairs, encoded) if c.trainable_tokens and r.trainable_tokens]
        if not usable:
            raise ValueError(f"no pair in {self.path} has agent tokens on both sides within data.max_length={self.max_length}")
        # Held out by question, so no validation question has pairs in training.
        questions = list(dict.fromkeys((p.chosen.task, p.chosen.qid) for p, _, _ in usable))
        order = torch.randperm(len(questions), generator=torch.Generator().manual_seed(self.seed)).tolist()
        held_out = {questions[i] for i in order[: round(len(questions) * self.val_fraction) if len(questions) > 1 else 0]}
        self.train_set, self.val_set = [], []
        for p, c, r in usable:
            record = {"chosen": {"input_ids": c.input_ids, "labels": c.labels},
                      "rejected": {"input_ids": r.input_ids, "labels": r.labels}}
            (self.val_set if (p.chosen.task, p.chosen.qid) in held_out else self.train_set).append(record)
        self.stats = {
            "pairs": len(pairs),
            "questions": len(questions),
            "val_questions": len(held_out),
            "truncated": truncated,
            "dropped_no_trainable_tokens": len(encoded) - len(usable),
            "train_pairs": len(self.train_set),
            "val_pairs": len(self.val_set),
        }
        log.info("preference data: %s", self.stats)
