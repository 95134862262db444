"""DPO training end to end on the embedded model: pairs from a generate-style folder become
[chosen rows, rejected rows] batches masked like SFT examples, held out by question; `train
objective=dpo` starts at loss log 2 (the policy is its reference) and orders the pairs."""

import math
from dataclasses import replace

import pytest

from fireact.train.preference_data import PreferenceDataModule
from fireact.train.run import train
from fireact.formats import Alpaca
from fireact.train.examples import IGNORE_INDEX, build_example
from fireact.trajectory import Step
from fireact.trajectory_files import write_jsonl

from .conftest import train_config


@pytest.fixture
def sampled_folder(finals, tmp_path):
    """A generate folder: each of 8 short released trajectories as the success, and the same
    with a wrong final answer as the failure of that question."""
    folder = tmp_path / "samples"
    chosen = [replace(t, task="hotpotqa", qid=f"train-{i}", em=1.0) for i, t in enumerate(finals[:8])]
    rejected = []
    for t in chosen:
        last = t.steps[-1]
        wrong = Step(last.thought, "finish", "Nobody", "Episode finished, reward = False")
        rejected.append(replace(t, steps=[*t.steps[:-1], wrong], answer="Nobody", em=0.0, sample=1))
    write_jsonl(folder / "trajectories.jsonl", chosen)
    write_jsonl(folder / "failures.jsonl", rejected)
    return folder


def test_batches_hold_chosen_rows_then_rejected_rows_masked_like_sft(sampled_folder, tokenizer):
    data = PreferenceDataModule(str(sampled_folder), Alpaca(), tokenizer, batch_size=2, val_fraction=0.25,
                                max_length=160, seed=0)
    data.setup("fit")
    assert data.stats["pairs"] == 8 and data.stats["val_pairs"] == 2 and data.stats["val_questions"] == 2
    assert next(iter(data.train_dataloader()))["input_ids"].shape[0] == 4  # 2 pairs: 4 rows
    pairs = data.train_set[:2]
    batch = data.collate_pairs(pairs)
    for row, side in ((0, pairs[0]["chosen"]), (1, pairs[1]["chosen"]), (2, pairs[0]["rejected"]), (3, pairs[1]["rejected"])):
        length = len(side["labels"])
        assert batch["input_ids"][row, :length].tolist() == side["input_ids"]
        assert batch["labels"][row, :length].tolist() == side["labels"]
        assert (batch["labels"][row, length:] == IGNORE_INDEX).all()  # padding is never trained
    assert pairs[0]["chosen"]["input_ids"] != pairs[0]["rejected"]["input_ids"]


def test_chosen_and_rejected_sides_are_the_sft_examples(sampled_folder, tokenizer, finals):
    data = PreferenceDataModule(str(sampled_folder), Alpaca(), tokenizer, batch_size=2, val_fraction=0,
                                max_length=160, seed=0)
    data.setup("fit")
    sft = build_example(Alpaca().segments(finals[0], tokenizer), False, 160)
    assert data.train_set[0]["chosen"] == {"input_ids": sft.input_ids, "labels": sft.labels}


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_dpo_starts_at_log_2_and_orders_the_pairs(sampled_folder, tmp_path, finetune):
    steps = 8 if finetune == "lora" else 4
    lr = "2e-3" if finetune == "lora" else "2e-5"
    cfg = train_config(tmp_path / "run", sampled_folder, "objective=dpo", "data=preference", f"finetune={finetune}",
                       f"trainer.max_steps={steps}", "trainer.max_epochs=10", f"optimizer.lr={lr}", "objective.beta=0.5")
    summary = train(cfg)
    assert summary["objective"] == "dpo" and summary["optimizer_steps"] == steps
    assert summary["losses"][0] == pytest.approx(math.log(2), abs=1e-4)  # the policy starts as its reference
    assert summary["losses"][-1] < math.log(2) - 0.05
    assert summary["reward_margin_last"] > summary["reward_margin_first"] and summary["reward_accuracy_last"] > 0.5


def test_dpo_on_trajectories_is_a_clear_error(finals, write_trajectories, tmp_path):
    cfg = train_config(tmp_path / "run", write_trajectories(finals[:2]), "objective=dpo")
    with pytest.raises(ValueError, match="objective=dpo with data=preference"):
        train(cfg)
