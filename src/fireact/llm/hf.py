"""The `hf` backend: local generation with transformers on CPU or GPU.

The model is loaded once (a hub id, a local or merged checkpoint folder, or the embedded
default), optionally with a PEFT adapter merged in. Prompts are tokenized (chat message lists
through the tokenizer's chat template), sorted by length to keep padding small, and generated
in left-padded batches; transformers' own stop-string criterion ends each sequence at its
first stop string, and the text is cut there and at end-of-sequence.
All generation goes through `_generate_batch`, the one place where a shared-prefix KV cache
can later be added.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from fireact.llm.base import LLM, Completion, Prompt, cut_at_stop
from fireact.llm.embedded import resolve_model_path

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HFBackend(LLM):
    """Generate with a transformers causal LM.

    model: the model group config (conf/model/*.yaml): `name` (logged with trajectories),
        `path` (hub id, local folder, or "embedded:<name>"), optional `adapter` (PEFT folder).
    device: "auto" (cuda when available), "cpu", "cuda" or "cuda:N".
    dtype: "auto" (float32 on CPU; bfloat16 on GPUs that support it, else float16),
        "float32", "bfloat16" or "float16".
    batch_size: prompts per forward batch; longer prompt lists are split into chunks.
    temperature: 0 for greedy decoding, above 0 to sample (with `top_p`).
    seed: makes sampling reproducible: call k of this backend samples under seed + k.
    """

    backend = "hf"

    def __init__(
        self,
        model: Mapping,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
    ):
        if not isinstance(model, Mapping) or not model.get("path"):
            raise ValueError(f"HFBackend needs the model config with a `path` (conf/model/*.yaml), got {model!r}")
        if batch_size < 1:
            raise ValueError(f"backend.batch_size must be at least 1, got {batch_size}")
        if temperature < 0:
            raise ValueError(f"backend.temperature must be 0 (greedy) or positive, got {temperature}")
        if not 0 < top_p <= 1:
            raise ValueError(f"backend.top_p must be in (0, 1], got {top_p}")
        self.device = _device(device)
        self.dtype = _dtype(dtype, self.device)
        self.model = model.get("name") or model["path"]
        self.batch_size = batch_size
        self.temperature = temperature
        self.top_p = top_p
        self.seed = seed
        self._calls = 0

        path = _model_path(model["path"])
        adapter = _adapter_path(model.get("adapter"))
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.lm = AutoModelForCausalLM.from_pretrained(path, dtype=self.dtype, device_map=str(self.device))
        except OSError as e:
            raise OSError(
                f"cannot load model.path={path!r}: {e}. Set model.path to a local checkpoint folder "
                f"or a hub id reachable from this machine."
            ) from e
        if adapter is not None:
            from peft import PeftModel

            # Merged once at load: generation then runs at the speed of the plain model.
            self.lm = PeftModel.from_pretrained(self.lm, str(adapter)).merge_and_unload()
        self.lm.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        eos = self.lm.generation_config.eos_token_id
        eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
        # After a sequence ends, generate() fills its row with the pad token: both mark the end.
        self._end_ids = {*eos, self.tokenizer.eos_token_id, self.tokenizer.pad_token_id} - {None}

    def generate(self, prompts: Sequence[Prompt], stop: Sequence[str] = (), max_tokens: int = 256) -> list[Completion]:
        if self.lm is None:
            raise RuntimeError("this HFBackend was closed; build a new one to generate")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
        stop = [s for s in stop if s]
        encoded = [self._encode(p) for p in prompts]
        by_length = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
        completions: list[Completion | None] = [None] * len(encoded)
        with self._seeded():
            for start in range(0, len(by_length), self.batch_size):
                chunk = by_length[start : start + self.batch_size]
                for i, completion in zip(chunk, self._generate_batch([encoded[i] for i in chunk], stop, max_tokens)):
                    completions[i] = completion
        self._calls += 1
        return completions

    def close(self) -> None:
        self.lm = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _encode(self, prompt: Prompt) -> list[int]:
        if isinstance(prompt, str):
            return self.tokenizer(prompt)["input_ids"]
        if self.tokenizer.chat_template is None:
            raise ValueError(
                f"model {self.model!r} has no chat template, so chat-message prompts cannot be rendered; "
                f"send string prompts or use a chat/instruct model"
            )
        return self.tokenizer.apply_chat_template(list(prompt), add_generation_prompt=True, return_dict=True)["input_ids"]

    def _generate_batch(self, prompts: list[list[int]], stop: list[str], max_tokens: int) -> list[Completion]:
        batch = self.tokenizer.pad({"input_ids": prompts}, padding=True, return_tensors="pt").to(self.device)
        config = copy.deepcopy(self.lm.generation_config)
        config.update(max_new_tokens=max_tokens, stop_strings=stop or None, pad_token_id=self.tokenizer.pad_token_id)
        if self.temperature > 0:  # top_k=0 turns off transformers' default top-k 50: plain nucleus sampling
            config.update(do_sample=True, temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            config.update(do_sample=False)
        with torch.inference_mode():
            out = self.lm.generate(**batch, generation_config=config, tokenizer=self.tokenizer)
        generated = out[:, batch["input_ids"].shape[1] :].tolist()
        return [self._completion(len(p), tokens, stop) for p, tokens in zip(prompts, generated)]

    def _completion(self, prompt_tokens: int, tokens: list[int], stop: list[str]) -> Completion:
        end = next((i for i, t in enumerate(tokens) if t in self._end_ids), len(tokens))
        text, stopped = cut_at_stop(self.tokenizer.decode(tokens[:end], skip_special_tokens=True), stop)
        if stopped:  # generation halted on the token that completed the stop string
            return Completion(text, prompt_tokens, end, "stop")
        if end < len(tokens):  # an end-of-sequence token, counted as generated
            return Completion(text, prompt_tokens, end + 1, "stop")
        return Completion(text, prompt_tokens, len(tokens), "length")

    def _seeded(self):
        """Sample under seed + call number, leaving the global RNG state as it was."""
        if self.seed is None:
            return nullcontext()
        return _forked_seed(self.seed + self._calls, self.device)


@contextmanager
def _forked_seed(seed: int, device: torch.device):
    with torch.random.fork_rng(devices=[] if device.type == "cpu" else None):
        torch.manual_seed(seed)
        yield


def _device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device != "cpu" and not device.startswith("cuda"):
        raise ValueError(f"backend.device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"backend.device={device!r} but torch sees no CUDA GPU here; use backend.device=cpu or auto")
    return torch.device(device)


def _dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        if device.type == "cpu":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ValueError(f"backend.dtype must be auto or one of {sorted(DTYPES)}, got {dtype!r}")
    return DTYPES[dtype]


def _model_path(path: str) -> str:
    path = resolve_model_path(str(path))
    if path.startswith(("/", ".", "~")):  # a local folder; hub ids never start this way
        folder = Path(path).expanduser()
        if not (folder / "config.json").exists():
            raise FileNotFoundError(
                f"model.path={path!r} is not a checkpoint folder (no config.json there); "
                f"set model.path to a folder written by save_pretrained or to a hub id"
            )
        return str(folder)
    return path


def _adapter_path(adapter: str | None) -> Path | None:
    if not adapter:
        return None
    folder = Path(str(adapter)).expanduser()
    if not (folder / "adapter_config.json").exists():
        raise FileNotFoundError(
            f"model.adapter={str(adapter)!r} is not a PEFT adapter folder (no adapter_config.json there); "
            f"set model.adapter to the folder written by `train` or to null for the base model"
        )
    return folder
