"""Reading every training input, the seeded split, bad input, and length-grouped batches."""

import json

import pytest

from fireact.data.export import write_dataset
from fireact.train.datamodule import TrajectoryDataModule, load_trajectories
from fireact.train.examples import IGNORE_INDEX
from fireact.formats import Alpaca, Chat
from fireact.trajectory import Step, Trajectory
from fireact.trajectory_files import write_chat


def make(tokenizer, path, **kwargs):
    kwargs.setdefault("format", Alpaca())
    return TrajectoryDataModule(path=str(path), tokenizer=tokenizer, context_length=8192, **kwargs)


def test_reads_every_input_kind(released, tmp_path):
    subset = released[:5]
    write_dataset(tmp_path / "built", subset)  # what build_data writes
    write_chat(tmp_path / "chat.jsonl", subset)
    (tmp_path / "alpaca.json").write_text(json.dumps([Alpaca().record(t) for t in subset]))

    from_folder = load_trajectories(tmp_path / "built")
    from_file = load_trajectories(tmp_path / "built" / "trajectories.jsonl")
    from_chat = load_trajectories(tmp_path / "chat.jsonl")
    from_alpaca = load_trajectories(tmp_path / "alpaca.json")
    for loaded in (from_folder, from_file, from_chat, from_alpaca):
        assert [t.question for t in loaded] == [t.question for t in subset]
        assert [t.steps for t in loaded] == [t.steps for t in subset]
    # A relative path is found in the data folder: the released file, as the default config names it.
    assert len(load_trajectories("finetune/alpaca_format/hotpotqa.json")) == 500


def test_missing_input_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere.jsonl"):
        load_trajectories(tmp_path / "nowhere.jsonl")
    with pytest.raises(FileNotFoundError, match="without trajectories.jsonl"):
        load_trajectories(tmp_path)
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(ValueError, match="expected a .json"):
        load_trajectories(tmp_path / "notes.txt")


def test_validation_split_is_seeded(shortest, tokenizer, write_trajectories):
    path = write_trajectories(shortest)

    def split(seed):
        data = make(tokenizer, path, val_fraction=0.25, seed=seed)
        data.setup()
        return [r["input_ids"] for r in data.val_set], data

    first, data = split(1)
    again, _ = split(1)
    other, _ = split(2)
    assert first == again and first != other
    assert len(first) == 4 and data.stats["train_examples"] == 12
    assert not {tuple(x) for x in first} & {tuple(r["input_ids"]) for r in data.train_set}


def test_no_trainable_tokens_fails_before_training(released, tokenizer, write_trajectories):
    # max_length shorter than the Alpaca header leaves nothing of the agent's.
    data = make(tokenizer, write_trajectories(released[:3]), max_length=20)
    with pytest.raises(ValueError, match="no trainable tokens.*data.max_length=20"):
        data.setup()
    only_observations = [Trajectory(task="t", qid=str(i), question="Q", gold="", steps=[Step(observation="x")]) for i in range(3)]
    data = make(tokenizer, write_trajectories(only_observations, "obs.jsonl"), format=Alpaca(add_eos=False))
    with pytest.raises(ValueError, match="no trainable tokens"):
        data.setup()


def test_too_long_truncates_and_counts_or_errors(released, tokenizer, write_trajectories):
    path = write_trajectories(released[:6])
    data = make(tokenizer, path, max_length=150, val_fraction=0)
    data.setup()
    assert data.stats["truncated"] > 0
    assert all(len(r["input_ids"]) <= 150 for r in data.train_set)
    with pytest.raises(ValueError, match="longer than data.max_length=150.*too_long=truncate"):
        make(tokenizer, path, max_length=150, too_long="error").setup()
    with pytest.raises(ValueError, match="longer than the model's context"):
        make(tokenizer, path, max_length=10_000)


def test_batches_pad_labels_and_group_by_length(released, tokenizer, write_trajectories):
    path = write_trajectories(released[:48])

    def padding(group_by_length):
        data = make(tokenizer, path, format=Chat(), batch_size=4, val_fraction=0,
                    group_by_length=group_by_length, seed=3)
        batches = list(data.train_dataloader())
        assert sum(len(b["input_ids"]) for b in batches) == 48
        for batch in batches:
            assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()
        return sum(int((b["attention_mask"] == 0).sum()) for b in batches)

    assert padding(True) < 0.75 * padding(False)
