import json

from fireact.tasks.base import Question, Task
from fireact.tasks.metrics import exact_match, f1_score, normalize_answer
from fireact.trajectory_files import read_alpaca

# The released fine-tuning set whose questions form the offline training split.
TRAIN_SOURCE = ("finetune", "alpaca_format", "hotpotqa_multimethod.json")


class HotpotQA(Task):
    """HotpotQA. Offline splits:
    - dev: the 7,405 dev questions (qid = index in dev.json); the paper evaluates on the
      seed-233 shuffle's first 500;
    - train: the 723 distinct HotpotQA training questions of the released fine-tuning data (qid
      "train-<i>", in the file's order), gold = the teacher's final answer (the released
      trajectories are the teacher's successes). The recorded search tool knows the queries
      asked on them, so a student can find their answers offline: the split that sampling,
      rejection-sampling rounds and RL run on. None of them is a dev question.
    """

    name = "hotpotqa"
    splits = ("dev", "train")
    prompt_name = "hotpotqa"

    def _load(self, split):
        if split == "train":
            return self._training_questions()
        records = json.loads(self._file("hotpotqa", f"{split}.json").read_text())
        return [Question(str(i), r["question"], r["answer"]) for i, r in enumerate(records)]

    def _training_questions(self) -> list[Question]:
        trajectories, _ = read_alpaca(self._file(*TRAIN_SOURCE))
        questions: dict[str, Question] = {}
        for t in trajectories:
            key = normalize_answer(t.question)  # the importer's question normalisation
            if key not in questions and t.answer:
                questions[key] = Question(f"train-{len(questions)}", t.question, t.answer)
        return list(questions.values())

    def _from_hub_row(self, index, row):
        # e.g. hub={path: hotpot_qa, name: distractor, split: train}
        return Question(str(row.get("id", index)), row["question"], row["answer"])

    def score(self, prediction, gold):
        return {"em": exact_match(prediction, gold), "f1": f1_score(prediction, gold)}
