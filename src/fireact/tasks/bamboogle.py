import pandas as pd

from fireact.tasks.base import Question, Task
from fireact.tasks.metrics import exact_match, f1_score


class Bamboogle(Task):
    """Bamboogle's 125 two-hop questions, scored like HotpotQA, prompted with HotpotQA's examples."""

    name = "bamboogle"
    splits = ("test",)
    prompt_name = "hotpotqa"

    def _load(self, split):
        table = pd.read_csv(self._file("bamboogle", f"{split}.csv"), dtype=str, keep_default_na=False)
        return [Question(str(i), row.Question, row.Answer) for i, row in enumerate(table.itertuples())]

    def score(self, prediction, gold):
        return {"em": exact_match(prediction, gold), "f1": f1_score(prediction, gold)}
