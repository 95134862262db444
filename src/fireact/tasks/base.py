"""A task: questions with ids and gold answers per split, few-shot prompts, scoring."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import datasets

from fireact.paths import data_dir as default_data_dir

METHODS = ("io", "cot", "react", "reflexion")  # the methods a task has few-shot prompts for (FireAct's)


@dataclass(frozen=True)
class Question:
    qid: str
    question: str
    gold: str


@dataclass(frozen=True)
class HubSource:
    """A dataset on the Hugging Face hub (or any `datasets.load_dataset` path, e.g. "json")."""

    path: str
    name: str | None = None
    split: str = "train"
    data_files: Any = None


class Task(ABC):
    """Subclasses set `name`, `splits` and `prompt_name`, and implement `_load` and `score`.

    `questions(split)` is the split in a fixed order: shuffled with `shuffle_seed` when one is
    set (the paper shuffles HotpotQA dev with seed 233 and evaluates on the first 500), then
    sliced by `start` and `n`.
    """

    name: str
    splits: tuple[str, ...]
    prompt_name: str  # which task's few-shot prompts it uses (bamboogle borrows hotpotqa's)

    def __init__(
        self,
        split: str | None = None,
        n: int | None = None,
        start: int = 0,
        shuffle_seed: int | None = None,
        data_dir: str | Path | None = None,
        hub: dict | HubSource | None = None,
    ):
        self.split = split or self.splits[0]
        self.n, self.start, self.shuffle_seed = n, start, shuffle_seed
        self.data_dir = Path(data_dir) if data_dir else default_data_dir()
        self.hub = HubSource(**hub) if isinstance(hub, dict) else hub
        if self.hub is None and self.split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {self.split!r}; choose one of {list(self.splits)}")
        if n is not None and (not _is_int(n) or n < 1):
            raise ValueError(f"task.n={n!r}: the number of questions must be an integer >= 1; set task.n=1 or more "
                             f"(task.n=null: the whole split)")
        if not _is_int(start) or start < 0:
            raise ValueError(f"task.start={start!r}: the first question's index must be an integer >= 0; "
                             f"set task.start=0 or more")

    # --- questions -------------------------------------------------------------------
    def all_questions(self, split: str | None = None) -> list[Question]:
        """Every question of a split, in the file's order (or the hub dataset's)."""
        if self.hub is not None and split is None:
            return self._from_hub()
        split = split or self.split
        if split not in self.splits:
            raise ValueError(f"task {self.name!r} has no split {split!r}; choose one of {list(self.splits)}")
        return self._load(split)

    def questions(self) -> list[Question]:
        """The configured selection: the split, shuffled by `shuffle_seed`, from `start`, `n` of them."""
        questions = self.all_questions()
        if self.shuffle_seed is not None:
            order = list(range(len(questions)))
            random.Random(self.shuffle_seed).shuffle(order)
            questions = [questions[i] for i in order]
        end = None if self.n is None else self.start + self.n
        if end is not None and end > len(questions):
            raise ValueError(
                f"task {self.name!r} split {self.split!r} has {len(questions)} questions; "
                f"start={self.start} n={self.n} asks for more. Lower n."
            )
        return questions[self.start:end]

    @property
    def source(self) -> str:
        """Where the questions come from: the hub dataset's path, or the data folder."""
        return self.hub.path if self.hub is not None else str(self.data_dir)

    def dataset(self) -> datasets.Dataset:
        """The configured selection as a `datasets.Dataset` with columns qid, question, gold."""
        return datasets.Dataset.from_list([asdict(q) for q in self.questions()])

    def _from_hub(self) -> list[Question]:
        hub = self.hub
        rows = datasets.load_dataset(hub.path, hub.name, split=hub.split, data_files=hub.data_files)
        return [self._from_hub_row(i, row) for i, row in enumerate(rows)]

    def _from_hub_row(self, index: int, row: dict) -> Question:
        raise NotImplementedError(f"task {self.name!r} cannot read hub datasets")

    def _file(self, *parts: str) -> Path:
        path = self.data_dir.joinpath(*parts)
        if not path.exists():
            raise FileNotFoundError(
                f"task {self.name!r}: data file {path} is missing. The project's data/ folder "
                f"ships it; set FIREACT_DATA_DIR if your data lives elsewhere."
            )
        return path

    @abstractmethod
    def _load(self, split: str) -> list[Question]: ...

    # --- prompts ---------------------------------------------------------------------
    def prompt(self, method: str) -> str:
        """The few-shot prompt for a method (reflexion prompts with the ReAct examples)."""
        if method not in METHODS:
            raise ValueError(f"unknown method {method!r}; choose one of {list(METHODS)}")
        stem = {"react": "react_{}_google", "reflexion": "react_{}_google"}.get(method, method + "_{}")
        return self._file("prompts", stem.format(self.prompt_name) + ".txt").read_text()

    def fewshot_question(self, question: str) -> str:
        """The question as the few-shot examples pose it (fine-tuned formats use it as is)."""
        return question

    # --- scoring ---------------------------------------------------------------------
    @abstractmethod
    def score(self, prediction: str, gold: str) -> dict[str, float]:
        """{"em": ..., "f1": ...} for one answer."""


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
