"""Which names and values count as secrets, and how they are masked."""

import pytest

from fireact.secrets import MASK, Redactor, is_secret_name, secret_values


@pytest.mark.parametrize(
    "name", ["api_key", "OPENAI_API_KEY", "SERPAPI_API_KEY", "HF_TOKEN", "apiKey", "hf-token", "password",
             "db_password", "client_secret", "key", "backend.api_key", "hparams/access_token", "credentials"],
)
def test_secret_names(name):
    assert is_secret_name(name)


@pytest.mark.parametrize(
    "name", ["max_tokens", "prompt_tokens_mean", "tokenizer", "monkey", "keys", "api_key_env", "model.name",
             "completion_per_1k", "authors"],
)
def test_names_that_are_not_secret(name):
    assert not is_secret_name(name)


def test_secret_values_come_from_environment_and_config():
    environ = {"OPENAI_API_KEY": "sk-env-value-0123456789", "HOME": "/root", "SHORT_TOKEN": "abc"}
    config = {"backend": {"api_key": "config-secret-42", "max_tokens": 256}, "tools": [{"token": "list-secret-99"}]}
    assert secret_values(config, environ) == {"sk-env-value-0123456789", "config-secret-42", "list-secret-99"}


def test_redactor_masks_text_trees_and_overrides():
    redactor = Redactor({"hunter2-hunter2"})
    assert redactor.text("pass=hunter2-hunter2;") == f"pass={MASK};"
    assert redactor.text("key sk-abcdefghijklmnopqrstuv in text") == f"key {MASK} in text"
    tree = {"a": {"password": "short", "note": "has hunter2-hunter2"}, "b": ["hunter2-hunter2", 3], "token": None}
    assert redactor.tree(tree) == {"a": {"password": MASK, "note": f"has {MASK}"}, "b": [MASK, 3], "token": None}
    assert redactor.override("+backend.api_key=abc") == f"+backend.api_key={MASK}"
    assert redactor.override("model=llama2_7b") == "model=llama2_7b"
    assert redactor.override("notes=hunter2-hunter2") == f"notes={MASK}"


def test_redactor_masks_files_by_copy(tmp_path):
    redactor = Redactor({"hunter2-hunter2"})
    clean, dirty = tmp_path / "clean.txt", tmp_path / "dirty.txt"
    clean.write_text("nothing here")
    dirty.write_text("line with hunter2-hunter2\n")
    assert redactor.file(clean, tmp_path) == clean
    masked = redactor.file(dirty, tmp_path)
    assert masked != dirty and masked.name == "dirty.txt"
    assert masked.read_text() == f"line with {MASK}\n"
    assert "hunter2" in dirty.read_text()  # the original is left alone
