"""The QA datasets search agents are measured on since Search-R1, in FlashRAG's format: JSONL rows
{"id": ..., "question": ..., "golden_answers": [...]} (NQ, TriviaQA, PopQA, HotpotQA,
2WikiMultihopQA, MuSiQue, Bamboogle). Read from a local file (`path`), else from the hub
(RUC-NLPIR/FlashRAG_datasets, the dataset's name as its config).

A question may have several gold answers: its `gold` is them as a JSON list, and an answer's EM
is 1 when it equals any of them after SQuAD normalisation, as Search-R1's em_check scores it
(tests/tasks/test_qa_datasets.py checks 2,000 cases against that code's answers); F1 is the best
over them. Prompted with HotpotQA's few-shot examples, as Bamboogle is here.
"""

from __future__ import annotations

import json
from pathlib import Path

from fireact.tasks.base import HubSource, Question, Task
from fireact.tasks.metrics import exact_match, f1_score

FLASHRAG_HUB = "RUC-NLPIR/FlashRAG_datasets"
FORMAT = '{"id": ..., "question": ..., "golden_answers": [...]} a line (FlashRAG\'s format)'


def gold_answers(gold: str) -> list[str]:
    """A question's accepted answers: its gold as a JSON list, or the one string."""
    if gold.startswith("["):
        try:
            answers = json.loads(gold)
        except ValueError:
            return [gold]
        if isinstance(answers, list) and all(isinstance(a, str) for a in answers):
            return answers
    return [gold]


class QADataset(Task):
    """`dataset`: the dataset's name (nq, triviaqa, popqa, hotpotqa, 2wikimultihopqa, musique,
    bamboogle: the hub config); `path`: a local JSONL file in FlashRAG's format instead."""

    prompt_name = "hotpotqa"

    def __init__(self, dataset: str, split: str = "test", path: str | None = None, **options):
        self.name, self.path = dataset, Path(path) if path else None
        self.splits = (split,)
        hub = None if self.path else HubSource(FLASHRAG_HUB, dataset, split)
        super().__init__(split=split, hub=hub, **options)

    def all_questions(self, split: str | None = None) -> list[Question]:
        if self.path:
            return self._load(split or self.split)
        try:
            return super().all_questions(split)
        except (OSError, ConnectionError, ValueError) as err:  # offline, or no such config on the hub
            raise ValueError(f"task {self.name!r}: {FLASHRAG_HUB} ({self.name}, split {self.split}) could not be "
                             f"read ({type(err).__name__}: {err}); offline, give a local file: task.path=FILE, "
                             f"{FORMAT}") from err

    def _load(self, split: str) -> list[Question]:
        if not self.path.is_file():
            raise FileNotFoundError(f"task.path={str(self.path)!r} is not a file; give a JSONL file, {FORMAT}")
        questions = []
        for number, line in enumerate(self.path.read_text(encoding="utf-8").splitlines(), start=1):
            if line.strip():
                try:
                    questions.append(self._from_hub_row(number - 1, json.loads(line)))
                except (ValueError, KeyError, TypeError) as err:
                    raise ValueError(f"task.path {self.path} line {number} is not a question ({err}); the format "
                                     f"is {FORMAT}") from None
        return questions

    def _from_hub_row(self, index: int, row: dict) -> Question:
        answers = row["golden_answers"]
        if isinstance(answers, str):
            answers = [answers]
        if not isinstance(answers, list) or not answers:
            raise ValueError(f"golden_answers must be a non-empty list, got {answers!r}")
        return Question(str(row.get("id", index)), str(row["question"]), json.dumps([str(a) for a in answers]))

    def score(self, prediction: str, gold: str) -> dict[str, float]:
        answers = gold_answers(gold)
        return {"em": max(exact_match(prediction, a) for a in answers),
                "f1": max(f1_score(prediction, a) for a in answers)}
