import json

from fireact.tasks.base import Question, Task
from fireact.tasks.metrics import exact_match, f1_score


class HotpotQA(Task):
    """HotpotQA; the offline data holds dev (7,405 questions). qid = index in dev.json."""

    name = "hotpotqa"
    splits = ("dev",)
    prompt_name = "hotpotqa"

    def _load(self, split):
        records = json.loads(self._file("hotpotqa", f"{split}.json").read_text())
        return [Question(str(i), r["question"], r["answer"]) for i, r in enumerate(records)]

    def _from_hub_row(self, index, row):
        # e.g. hub={path: hotpot_qa, name: distractor, split: train}
        return Question(str(row.get("id", index)), row["question"], row["answer"])

    def score(self, prediction, gold):
        return {"em": exact_match(prediction, gold), "f1": f1_score(prediction, gold)}
