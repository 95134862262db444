"""The prompt formats: a rollout's prompt is a token prefix of the training sequence of the same
trajectory at every round, in every trainable format; method.format=auto prompts a model in the
format train recorded beside its weights."""

import pytest
from omegaconf import OmegaConf

from fireact.agents.methods import ReAct
from fireact.formats import TRAINED_FORMAT, get_format, resolve_format, trained_format, write_trained_format
from fireact.paths import data_dir
from fireact.tasks import HotpotQA
from fireact.trajectory_files import read_alpaca


@pytest.mark.parametrize("name", ["alpaca", "chat"])
def test_a_rollout_prompt_is_a_token_prefix_of_the_training_sequence_at_every_round(name, hf_backend):
    """The agent's prompt at each round (the method's, as the hf backend encodes it) against the
    format's training ids of the same released trajectory: the prompt is their prefix, so what a
    fine-tuned agent is prompted with is what it was trained on (no few-shot examples either)."""
    prompt = ReAct(format=name).prompter(HotpotQA())
    fmt = get_format(name)
    rounds = 0
    for trajectory in read_alpaca(data_dir() / "finetune/alpaca_format/hotpotqa.json")[0][:100]:
        training = [i for segment in fmt.segments(trajectory, hf_backend.tokenizer) for i in segment.ids]
        for k in range(len(trajectory.steps)):  # round k + 1 follows k rounds that each got an observation
            if k and trajectory.steps[k - 1].observation is None:
                continue
            ids = hf_backend.encode(prompt(trajectory.question, trajectory.steps[:k], k + 1))
            assert training[: len(ids)] == ids, (trajectory.qid, k)
            rounds += 1
    assert rounds == 247  # the 100 trajectories hold 247 such rounds


def model(**fields):
    return OmegaConf.create({"name": "m", "path": "embedded:smollm2-135m-instruct", "adapter": None, **fields})


def test_auto_is_the_trained_format_of_the_adapter_or_model_folder_and_fewshot_for_a_base(tmp_path):
    adapter, full = tmp_path / "adapter", tmp_path / "model"
    adapter.mkdir(), full.mkdir()
    write_trained_format(adapter, "chat")
    write_trained_format(full, "alpaca")
    assert trained_format(adapter) == "chat" and trained_format(tmp_path) is None
    assert resolve_format("auto", model(adapter=str(adapter))) == "chat"
    assert resolve_format("auto", model(path=str(full))) == "alpaca"
    assert resolve_format("auto", model()) == "fewshot"  # the base model
    assert resolve_format("alpaca", model()) == "alpaca"  # an explicit format is kept
    assert resolve_format("fewshot", model(path=str(full))) == "fewshot"


def test_an_adapter_without_a_recorded_format_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=f"has no {TRAINED_FORMAT}.*set method.format=alpaca or method.format=chat"):
        resolve_format("auto", model(adapter=str(tmp_path)))
    (tmp_path / TRAINED_FORMAT).write_text('{"format": "markdown"}')
    with pytest.raises(ValueError, match="unknown format 'markdown'"):
        trained_format(tmp_path)
