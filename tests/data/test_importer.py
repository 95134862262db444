"""The released fine-tuning sets, labelled: what each holds per task × method, and the rules."""

import json
from collections import Counter

import pytest

from fireact.data.importer import (
    ReleasedSet,
    import_released,
    is_mmlu_shaped,
    question_hash,
    record_key,
)
from fireact.tasks import HotpotQA, StrategyQA
from fireact.tasks.metrics import normalize_answer
from fireact.trajectory_files import read_chat

# What the data holds, found by the rules in fireact/data/importer.py. The paper (PAPER.md)
# agrees on hotpotqa, hotpotqa_multimethod and multitask. For multitask_multimethod it
# describes ReAct + CoT with CoT 277 / 380 / 469 (HotpotQA / StrategyQA / MMLU): the file
# has 186 / 215 / 247 CoT and also 71 Reflexion trajectories (47 / 15 / 9).
EXPECTED = {
    "hotpotqa": {("hotpotqa", "react"): 500},
    "hotpotqa_multimethod": {("hotpotqa", "react"): 500, ("hotpotqa", "cot"): 187, ("hotpotqa", "reflexion"): 47},
    "multitask": {("hotpotqa", "react"): 500, ("strategyqa", "react"): 388, ("mmlu", "react"): 456},
    "multitask_multimethod": {
        ("hotpotqa", "react"): 500, ("hotpotqa", "cot"): 186, ("hotpotqa", "reflexion"): 47,
        ("strategyqa", "react"): 388, ("strategyqa", "cot"): 215, ("strategyqa", "reflexion"): 15,
        ("mmlu", "react"): 456, ("mmlu", "cot"): 247, ("mmlu", "reflexion"): 9,
    },
}
# The union of the four, one MMLU CoT record that multitask_multimethod holds twice kept once;
# hotpotqa_multimethod's CoT record with no thought ("Fox is a brevity code ...") is the one
# HotpotQA CoT missing from multitask_multimethod.
POOL = {
    ("hotpotqa", "react"): 500, ("hotpotqa", "cot"): 187, ("hotpotqa", "reflexion"): 47,
    ("strategyqa", "react"): 388, ("strategyqa", "cot"): 215, ("strategyqa", "reflexion"): 15,
    ("mmlu", "react"): 456, ("mmlu", "cot"): 246, ("mmlu", "reflexion"): 9,
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_each_released_set_holds_the_expected_counts_per_task_and_method(imported, name):
    assert dict(imported.counts(name)) == EXPECTED[name]
    assert not any(report.failures for report in imported.reports)


def test_the_pool_is_the_union_of_the_sets_without_duplicates(imported):
    assert dict(imported.counts()) == POOL
    assert imported.duplicates == 1
    assert len({record_key(t) for t in imported.pool}) == len(imported.pool) == 2063
    assert sorted(imported.pool[0].meta["sets"]) == ["hotpotqa", "hotpotqa_multimethod", "multitask", "multitask_multimethod"]


def test_the_same_record_gets_the_same_labels_in_every_set(imported):
    labels = {}
    for trajectories in imported.sets.values():
        for t in trajectories:
            assert labels.setdefault(record_key(t), (t.task, t.method, t.qid)) == (t.task, t.method, t.qid)
    tasks_of_qid = {}
    for t in imported.pool:
        tasks_of_qid.setdefault(t.qid, set()).add(t.task)
    assert all(len(tasks) == 1 for tasks in tasks_of_qid.values())


def test_task_rules_hold_on_the_data(imported):
    pool = imported.pool
    assert all(is_mmlu_shaped(t.question) == (t.task == "mmlu") for t in pool)
    # Every HotpotQA question of the multi-task sets is in a HotpotQA-only set (task rule 4),
    # which is what lets the rest fall back to StrategyQA.
    hotpot_only = {normalize_answer(t.question) for name in ("hotpotqa", "hotpotqa_multimethod") for t in imported.sets[name]}
    multitask_hotpot = [t for t in imported.sets["multitask_multimethod"] if t.task == "hotpotqa"]
    assert len(multitask_hotpot) == 733 and all(normalize_answer(t.question) in hotpot_only for t in multitask_hotpot)
    # StrategyQA answers are yes/no but for four long-winded teacher answers.
    strategy = [t for t in pool if t.task == "strategyqa"]
    not_yes_no = [t.answer for t in strategy if normalize_answer(t.answer) not in ("yes", "no")]
    assert len(not_yes_no) == 4 and sum(a.lower().startswith(("yes", "no")) for a in not_yes_no) == 1
    # The offline StrategyQA files hold 56 of the released StrategyQA questions: all labelled so.
    reference = {normalize_answer(q.question) for split in ("dev", "train_filtered") for q in StrategyQA(split=split).all_questions()}
    matched = [t for t in pool if normalize_answer(t.question) in reference]
    assert len({t.qid for t in matched}) == 56 and {t.task for t in matched} == {"strategyqa"}


def test_method_rules_hold_on_the_data(imported):
    for t in imported.pool:
        reflective = any(step.is_reflection for step in t.steps)
        assert reflective == (t.method == "reflexion")
        if t.method == "cot":
            assert len(t.steps) == 1 and t.steps[0].is_finish
    # ReAct trajectories that answer in one round without a search: from the ReAct-only sets.
    one_round_react = [t for t in imported.pool if t.method == "react" and len(t.steps) == 1]
    assert Counter(t.task for t in one_round_react) == {"hotpotqa": 1, "strategyqa": 32, "mmlu": 296}


def test_gold_and_qid_come_from_the_reference_data_when_the_question_is_there(imported):
    with_gold = [t for t in imported.pool if t.gold]
    assert Counter(t.meta["gold_source"] for t in with_gold) == {"strategyqa:dev": 59, "strategyqa:train_filtered": 1}
    dev = {q.qid: q for q in StrategyQA(split="dev").all_questions()}
    for t in with_gold:
        if t.meta["gold_source"] == "strategyqa:dev":
            assert dev[t.qid].gold == t.gold and normalize_answer(dev[t.qid].question) == normalize_answer(t.question)
        assert StrategyQA().score(t.answer, t.gold)["em"] == t.em == 1.0
    without = [t for t in imported.pool if not t.gold]
    assert all(t.qid == question_hash(t.question) and t.meta["gold_source"] is None for t in without)


def test_em_is_the_records_own_reward_and_only_reflexion_records_failed(imported):
    failed = Counter((t.task, t.method) for t in imported.pool if t.em == 0.0)
    assert failed == {("hotpotqa", "reflexion"): 40, ("strategyqa", "reflexion"): 5, ("mmlu", "reflexion"): 4}
    assert all(t.em == 1.0 for t in imported.pool if t.method != "reflexion")


def test_the_gpt_format_files_hold_the_same_records(imported, released_source):
    """Record for record, but for hotpotqa_multimethod's thoughtless CoT record, which the chat
    file lacks, and five multitask_multimethod records whose chat form has an assistant-written
    observation (dropped when read) or the question inside the assistant's turn."""
    differ = {}
    for name, trajectories in imported.sets.items():
        chats, _ = read_chat(released_source.data_dir / "finetune" / "gpt_format" / f"{name}.jsonl")
        alpaca, chat = Counter(map(record_key, trajectories)), Counter(map(record_key, chats))
        differ[name] = (sorted(q[:20] for q, _ in alpaca - chat), sorted(q[:20] for q, _ in chat - alpaca))
    assert differ["hotpotqa"] == differ["multitask"] == ([], [])
    assert differ["hotpotqa_multimethod"] == (["Fox is a brevity cod"], [])
    only_alpaca, only_chat = differ["multitask_multimethod"]
    assert len(only_alpaca) == 5 and only_alpaca == only_chat  # same questions, steps differ


def test_reference_questions_can_come_from_a_hub_dataset(tmp_path, released_source, imported):
    """`datasets.load_dataset` builds the reference (here its offline "json" loader, as a hub
    path would online): HotpotQA training questions then get their gold and id."""
    hotpot = imported.sets["hotpotqa"][:3]
    rows = [{"id": f"train-{i}", "question": t.question, "answer": f"gold {i}"} for i, t in enumerate(hotpot)]
    (tmp_path / "train.json").write_text("\n".join(json.dumps(row) for row in rows))
    hub_train = HotpotQA(hub={"path": "json", "data_files": str(tmp_path / "train.json"), "split": "train"})
    sets = [s for s in released_source.sets if s.name == "hotpotqa"]
    result = import_released(sets, released_source.data_dir, [hub_train])
    labelled = result.sets["hotpotqa"]
    assert [(t.qid, t.gold, t.meta["gold_source"]) for t in labelled[:3]] == [
        ("train-0", "gold 0", "hotpotqa:hub"), ("train-1", "gold 1", "hotpotqa:hub"), ("train-2", "gold 2", "hotpotqa:hub")]
    assert all(not t.gold for t in labelled[3:])


def test_a_released_set_declaration_must_be_complete():
    with pytest.raises(ValueError, match="fallback_task"):
        ReleasedSet("mixed", "x.json", ("hotpotqa", "mmlu"), ("react",))
    with pytest.raises(ValueError, match="unknown methods"):
        ReleasedSet("odd", "x.json", ("hotpotqa",), ("react", "tot"))
    with pytest.raises(ValueError, match="declare the tasks"):
        ReleasedSet("empty", "x.json", (), ("react",))


def test_use_must_name_declared_sets(released_source):
    with pytest.raises(ValueError, match=r"\['hotpot'\].*not declared"):
        import_released(released_source.sets, released_source.data_dir, [], use=["hotpot"])


def test_mmlu_shape():
    assert is_mmlu_shaped("Question: Which?\nA. x\nB. y\nC. z\nD. w")
    assert not is_mmlu_shaped("Question: Which?\nA. x\nB. y")
    assert not is_mmlu_shaped("Which?\nA. x\nB. y\nC. z\nD. w")
