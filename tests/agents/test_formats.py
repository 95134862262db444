"""method.format=auto: a model is prompted in the format train recorded beside its weights."""

import pytest
from omegaconf import OmegaConf

from fireact.agents.formats import TRAINED_FORMAT, resolve_format, trained_format, write_trained_format


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
