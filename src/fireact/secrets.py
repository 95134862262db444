"""Keep API keys out of everything tracking writes: params, tags, run names, artifacts.

A value is secret when its key looks like one (api_key, token, secret, password, ...), when
it is the value of an environment variable whose name looks like one (OPENAI_API_KEY,
SERPAPI_API_KEY, HF_TOKEN, ...), or when it has the shape of a well-known key (sk-..., hf_...).
Secret keys keep their name with the value masked; secret values are masked wherever they
appear in text.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK = "***"
# Word-bounded on "_" so that max_tokens, tokenizer or monkey are not secrets.
_SECRET_WORD = re.compile(r"(^|_)(api_?key|key|token|secret|password|passwd|credentials?|auth)(_|$)")
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9_\-]{16,}|hf_[A-Za-z0-9]{20,}|gh[pousr]_[A-Za-z0-9]{20,})")
# Shorter values (flags, "none", ports) are masked under their key but not searched for in text.
MIN_SECRET_LENGTH = 8


def is_secret_name(name: str) -> bool:
    """OPENAI_API_KEY, api_key, apiKey, hf-token, db.password: yes. api_key_env (which names a
    variable rather than holding a key), max_tokens, tokenizer: no."""
    words = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", str(name)).lower()
    words = re.sub(r"[^a-z0-9]+", "_", words).strip("_")
    return not words.endswith("_env") and bool(_SECRET_WORD.search(words))


def secret_values(config: Any = None, environ: Mapping[str, str] | None = None) -> set[str]:
    """The values to mask in text: secret-named environment variables and config entries."""
    environ = os.environ if environ is None else environ
    found = {value for name, value in environ.items() if is_secret_name(name)}
    found |= {str(value) for _, value in _secret_items(config)}
    return {value for value in found if len(value) >= MIN_SECRET_LENGTH}


def _secret_items(node: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for key, child in node.items():
            if is_secret_name(key) and child is not None and not isinstance(child, (Mapping, list)):
                yield str(key), child
            else:
                yield from _secret_items(child)
    elif isinstance(node, list):
        for child in node:
            yield from _secret_items(child)


class Redactor:
    """Masks secret values in text, config trees, flat params, override strings and files."""

    def __init__(self, secrets: Iterable[str] = ()):
        # Longest first, so a secret that contains another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= MIN_SECRET_LENGTH}, key=len, reverse=True)

    @classmethod
    def for_config(cls, config: Any = None) -> "Redactor":
        return cls(secret_values(config))

    def text(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, MASK)
        return _KEY_SHAPES.sub(MASK, text)

    def tree(self, node: Any) -> Any:
        """A copy of a nested dict/list config with secret-named entries and secret text masked."""
        if isinstance(node, Mapping):
            return {
                key: MASK if is_secret_name(key) and value is not None and not isinstance(value, (Mapping, list))
                else self.tree(value)
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [self.tree(value) for value in node]
        return self.text(node) if isinstance(node, str) else node

    def override(self, override: str) -> str:
        """One Hydra override `key=value` (also `+key=`, `~key`): the value masked if the key is secret."""
        key, sep, value = override.partition("=")
        if sep and is_secret_name(key.lstrip("+~").rsplit(".", 1)[-1]):
            return f"{key}={MASK}"
        return self.text(override)

    def file(self, path: Path, scratch: Path) -> Path:
        """`path` itself if it holds no secret, else a masked copy under `scratch` (same name).

        Binary files (images) are returned as they are: nothing here writes secrets into them.
        """
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            return path
        masked = self.text(text)
        if masked == text:
            return path
        copy = Path(tempfile.mkdtemp(dir=scratch)) / path.name
        copy.write_text(masked, encoding="utf-8")
        return copy
