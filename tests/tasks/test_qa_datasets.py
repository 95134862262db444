"""The Search-R1 QA datasets (FlashRAG's format): read from a local file, several gold answers each,
scored as Search-R1's own em_check scores them (2,000 cases it answered, data/search_r1_em_cases.jsonl)."""

import json
from pathlib import Path

import pytest

from fireact.tasks import QADataset
from fireact.tasks.qa import gold_answers
from tests.conftest import compose_config

CASES = Path(__file__).with_name("data") / "search_r1_em_cases.jsonl"


def test_em_equals_search_r1s_em_check_on_every_case():
    task = QADataset("nq", path="unused.jsonl")
    cases = [json.loads(line) for line in CASES.read_text(encoding="utf-8").splitlines()]
    ours = [task.score(c["prediction"], json.dumps(c["golden_answers"]))["em"] for c in cases]
    assert ours == [float(c["em"]) for c in cases]
    assert 0 < sum(ours) < len(ours)  # both outcomes are exercised


def test_a_local_file_in_flashrag_format(tmp_path):
    path = tmp_path / "nq.jsonl"
    rows = [{"id": "test_0", "question": "who got the first nobel prize in physics", "golden_answers":
             ["Wilhelm Conrad Röntgen", "Röntgen"]}, {"id": "test_1", "question": "capital of France?",
                                                      "golden_answers": ["Paris"]}]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    task = QADataset("nq", path=str(path), n=2)
    first, second = task.questions()
    assert (first.qid, gold_answers(first.gold)) == ("test_0", ["Wilhelm Conrad Röntgen", "Röntgen"])
    assert task.score("röntgen", first.gold) == {"em": 1.0, "f1": 1.0}
    assert task.score("Wilhelm Röntgen", first.gold)["em"] == 0.0 and task.score("Paris.", second.gold)["em"] == 1.0


def test_a_line_that_is_not_a_question_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"id": "0", "question": "q", "golden_answers": ["a"]}\n{"id": "1", "question": "q"}\n')
    with pytest.raises(ValueError, match="bad.jsonl line 2 is not a question .*golden_answers"):
        QADataset("nq", path=str(path)).questions()


@pytest.mark.parametrize("dataset, split", [("nq", "test"), ("triviaqa", "test"), ("popqa", "test"),
                                            ("hotpotqa", "dev"), ("2wikimultihopqa", "dev"), ("musique", "dev"),
                                            ("bamboogle", "test")])
def test_each_of_the_seven_is_a_task_config_on_search_r1s_split(dataset, split):
    cfg = compose_config("evaluate", [f"task=search_r1/{dataset}"])
    assert (cfg.task.dataset, cfg.task.split) == (dataset, split)
    task = QADataset(**{k: v for k, v in cfg.task.items() if k != "_target_"})
    assert (task.hub.path, task.hub.name, task.hub.split) == ("RUC-NLPIR/FlashRAG_datasets", dataset, split)
