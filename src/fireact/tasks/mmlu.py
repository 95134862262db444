import pandas as pd

from fireact.tasks.base import Question, Task
from fireact.tasks.metrics import letter_prefix_match

QUESTION_FORMAT = "Question: {}\nA. {}\nB. {}\nC. {}\nD. {}"


class MMLU(Task):
    """MMLU multiple choice; files are read in sorted subject order (not the filesystem's).

    qid = "<subject>/<row>". `subjects` restricts to some subjects (default: all 57).
    """

    name = "mmlu"
    splits = ("test", "dev", "val")
    prompt_name = "mmlu"

    def __init__(self, *args, subjects: list[str] | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.subjects = list(subjects) if subjects else None

    def _load(self, split):
        folder = self._file("mmlu", split)
        files = sorted(folder.glob(f"*_{split}.csv"))
        if self.subjects is not None:
            known = {f.name[: -len(f"_{split}.csv")] for f in files}
            missing = sorted(set(self.subjects) - known)
            if missing:
                raise ValueError(f"mmlu split {split!r} has no subjects {missing}; see {folder}")
            files = [f for f in files if f.name[: -len(f"_{split}.csv")] in self.subjects]
        questions = []
        for path in files:
            subject = path.name[: -len(f"_{split}.csv")]
            table = pd.read_csv(path, header=None, dtype=str, keep_default_na=False)
            if table.shape[1] != 6:
                raise ValueError(f"{path}: expected 6 columns (question, A, B, C, D, answer), got {table.shape[1]}")
            for row_index, row in enumerate(table.itertuples(index=False)):
                questions.append(Question(f"{subject}/{row_index}", QUESTION_FORMAT.format(*row[:5]), row[5]))
        return questions

    def fewshot_question(self, question):
        return "Single choice: " + question.removeprefix("Question: ")

    def score(self, prediction, gold):
        em = letter_prefix_match(prediction, gold)
        return {"em": em, "f1": em}
