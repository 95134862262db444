import json

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fireact.paths import data_dir
from fireact.tasks import MMLU, Bamboogle, HotpotQA, Question, StrategyQA
from fireact.tasks.metrics import normalize_answer


def test_hotpotqa_eval_questions_are_the_papers_seed_233_shuffle():
    questions = HotpotQA(n=500, shuffle_seed=233).questions()
    assert len(questions) == 500
    released = json.loads(next((data_dir() / "trajs").glob("*llama-2-7b*.json")).read_text())
    assert {q.qid for q in questions} == set(released)
    dev = json.loads((data_dir() / "hotpotqa" / "dev.json").read_text())
    assert questions[0].question == dev[int(questions[0].qid)]["question"]


def test_split_sizes_and_golds():
    assert len(HotpotQA().all_questions()) == 7405
    assert len(Bamboogle().all_questions()) == 125
    assert len(StrategyQA().all_questions()) == 229
    assert len(StrategyQA(split="train_filtered").all_questions()) == 2821
    assert {q.gold for q in StrategyQA().all_questions()} == {"yes", "no"}
    assert len(MMLU(split="test").all_questions()) == 14042
    assert {q.gold for q in MMLU(split="dev").all_questions()} == {"A", "B", "C", "D"}


def test_mmlu_order_does_not_depend_on_listing_order(tmp_path):
    # Same files created in reverse order in a fresh folder: same question order.
    source = data_dir() / "mmlu" / "dev"
    target = tmp_path / "mmlu" / "dev"
    target.mkdir(parents=True)
    for path in sorted(source.glob("*.csv"), reverse=True):
        (target / path.name).write_bytes(path.read_bytes())
    assert MMLU(split="dev", data_dir=tmp_path).all_questions() == MMLU(split="dev").all_questions()
    first = MMLU(split="dev").all_questions()[0]
    assert first.qid == "abstract_algebra/0" and first.question.startswith("Question: ") and "\nD. " in first.question


def test_subsets_are_deterministic_and_sliced():
    a = HotpotQA(n=20, start=10, shuffle_seed=233).questions()
    b = HotpotQA(n=500, shuffle_seed=233).questions()[10:30]
    assert a == b
    assert MMLU(subjects=["anatomy"], n=5, shuffle_seed=1).questions() == MMLU(subjects=["anatomy"], n=5, shuffle_seed=1).questions()


def test_scoring_per_task():
    assert HotpotQA().score("The Beatles", "Beatles") == {"em": 1.0, "f1": 1.0}
    assert StrategyQA().score("Yes", "yes")["em"] == 1.0
    assert MMLU().score("c", "C")["em"] == 1.0


def test_prompts_per_method():
    task = HotpotQA()
    assert task.prompt("react").startswith("Solve a question answering task")
    assert task.prompt("reflexion") == task.prompt("react")
    assert "Answer:" in task.prompt("cot") and "Answer:" in task.prompt("io")
    assert Bamboogle().prompt("react") == task.prompt("react")
    assert "yes" in StrategyQA().prompt("react") and "A." in MMLU().prompt("react")
    with pytest.raises(ValueError, match="unknown method 'tot'"):
        task.prompt("tot")


def test_as_datasets_dataset():
    ds = Bamboogle(n=5).dataset()
    assert ds.column_names == ["qid", "question", "gold"] and len(ds) == 5


def test_hub_source_goes_through_datasets_load_dataset(tmp_path):
    # The same code path a user takes with hub={path: hotpot_qa, name: distractor}; here
    # load_dataset's "json" builder reads a local file, since there is no hub offline.
    rows = [{"id": "x1", "question": "Q one?", "answer": "A1"}, {"id": "x2", "question": "Q two?", "answer": "A2"}]
    path = tmp_path / "train.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    task = HotpotQA(split="train", hub={"path": "json", "data_files": str(path), "split": "train"})
    assert [(q.qid, q.question, q.gold) for q in task.questions()] == [("x1", "Q one?", "A1"), ("x2", "Q two?", "A2")]


def test_bad_input_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="no split 'test'.*dev"):
        HotpotQA(split="test")
    with pytest.raises(FileNotFoundError, match="hotpotqa/dev.json is missing.*FIREACT_DATA_DIR"):
        HotpotQA(data_dir=tmp_path).questions()
    with pytest.raises(ValueError, match="has 125 questions.*n=200"):
        Bamboogle(n=200).questions()
    with pytest.raises(ValueError, match="no subjects \\['astrology'\\]"):
        MMLU(subjects=["astrology"]).questions()
    bad = tmp_path / "strategyqa"
    bad.mkdir()
    (bad / "strategyqa_dev.json").write_text(json.dumps([{"qid": "q9", "question": "?", "answer": "maybe"}]))
    with pytest.raises(ValueError, match="'q9': answer must be a boolean"):
        StrategyQA(data_dir=tmp_path).questions()


@pytest.mark.parametrize("name", ["hotpotqa", "bamboogle", "strategyqa", "mmlu"])
def test_task_configs_instantiate(name):
    cfg = OmegaConf.load(data_dir().parent / "conf" / "task" / f"{name}.yaml")
    task = instantiate(cfg)
    assert task.name == name and task.questions()


def test_hotpotqa_train_split_is_the_released_training_questions_apart_from_evaluation():
    train = HotpotQA(split="train", n=None).questions()
    assert len(train) == len({q.question for q in train}) == 723
    assert len({q.qid for q in train}) == 723 and all(q.qid.startswith("train-") and q.gold for q in train)
    dev = {normalize_answer(q.question) for q in HotpotQA(n=None).questions()}
    assert not {normalize_answer(q.question) for q in train} & dev  # none is a dev (evaluation) question
    assert train[0] == Question("train-0", "Who was the developer of the Chandrasekhar virial equations awarded "
                                "the Nobel Prize for Physics with?", "William A. Fowler")  # the file's first record
