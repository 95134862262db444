import json

from fireact.tasks.base import Question, Task
from fireact.tasks.metrics import yes_no_match


class StrategyQA(Task):
    """StrategyQA; gold is "yes"/"no" (the boolean answer). qid = the dataset's qid."""

    name = "strategyqa"
    splits = ("dev", "train_filtered")
    prompt_name = "strategyqa"

    def _load(self, split):
        records = json.loads(self._file("strategyqa", f"strategyqa_{split}.json").read_text())
        return [self._question(r) for r in records]

    def _from_hub_row(self, index, row):
        return self._question(row)

    @staticmethod
    def _question(record):
        if not isinstance(record.get("answer"), bool):
            raise ValueError(f"strategyqa record {record.get('qid')!r}: answer must be a boolean")
        return Question(record["qid"], record["question"], "yes" if record["answer"] else "no")

    def fewshot_question(self, question):
        return "Yes or no: " + question

    def score(self, prediction, gold):
        em = yes_no_match(prediction, gold)
        return {"em": em, "f1": em}
