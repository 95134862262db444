"""OpenAIBackend against a real OpenAI-compatible server: `vllm serve` with the embedded model on 127.0.0.1.

The server runs from the vLLM environment (.venv-vllm, `make install-vllm`); this test runs in
the main one, as a user of backend=openai would. One server for the module: its start dominates.
"""

from __future__ import annotations

import pytest

from fireact.llm.base import TokenIds
from fireact.llm.embedded import resolve_model_path
from fireact.llm.openai_backend import OpenAIBackend

from .servers import vllm_python, vllm_serving

pytestmark = pytest.mark.vllm
SERVED_NAME = "smollm2-test"
QUESTION = "What is the capital of France?"


@pytest.fixture(scope="module")
def folder() -> str:
    return resolve_model_path("embedded:smollm2-135m-instruct")


@pytest.fixture(scope="module")
def tokenizer(folder):
    from transformers import AutoTokenizer  # here, not at the top: this module is collected by every run

    return AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module")
def server(folder, tmp_path_factory):
    python = vllm_python()
    with vllm_serving(python, folder, SERVED_NAME, tmp_path_factory.mktemp("vllm") / "serve.log") as server:
        print(f"\nvllm serve answered /health {server.startup_s:.1f}s after launch")
        yield server


def backend(server, **config) -> OpenAIBackend:
    model = {"name": "SmolLM2-135M-Instruct", "path": server.served_name, "adapter": None}
    return OpenAIBackend(model=model, base_url=server.base_url, timeout_s=120, **config)


def test_completions_greedy_stop_strings_and_usage(server, tokenizer, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)  # a loopback server needs none
    prompt = "The capital of France is"
    with backend(server, api="completions") as llm:
        [free] = llm.generate([prompt], max_tokens=16)
        [again] = llm.generate([prompt], max_tokens=16)
        words = free.text.split()
        stop = words[1]  # cut before the second word the model wrote
        [cut] = llm.generate([prompt], stop=[stop], max_tokens=16)
        # The API takes 4 stop strings; a fifth that matches is cut on the client.
        [cut5] = llm.generate([prompt], stop=["@@1", "@@2", "@@3", "@@4", stop], max_tokens=16)
    assert "Paris" in free.text and again.text == free.text  # greedy is deterministic
    assert (free.completion_tokens, free.finish_reason) == (16, "length")
    assert free.prompt_tokens == len(tokenizer(prompt).input_ids)
    assert cut.text == free.text[: free.text.index(stop)] and cut.finish_reason == "stop"
    assert cut5.text == cut.text and cut5.finish_reason == "stop"
    assert cut.stop == cut5.stop == stop and free.stop is None  # the server says which stop string; the client cut the fifth
    assert 0 < cut.completion_tokens < 16


def test_chat_string_prompt_is_one_user_message(server):
    with backend(server, api="chat") as llm:
        as_string, as_messages = llm.generate([QUESTION, [{"role": "user", "content": QUESTION}]], max_tokens=24)
    # The same prompt tokens say the string was sent as that one message. The replies' words are not
    # compared: the first token is a near tie ("The" 25.33 against "L" 25.24 in float32) and the reply
    # then degenerates into repetition, which vLLM's CPU kernels round differently in a batch of two.
    assert as_string.text.strip() and as_messages.text.strip()
    assert as_string.prompt_tokens == as_messages.prompt_tokens > len(QUESTION.split())  # the chat template added


def test_concurrent_requests_come_back_in_order(server, tokenizer):
    prompts = [f"Question {i}: " + "how many legs does a spider have? " * (i + 1) + "Answer:" for i in range(8)]
    with backend(server, api="completions", concurrency=4) as llm:
        completions = llm.generate(prompts, stop=["\n"], max_tokens=12)
    assert all(c.error is None for c in completions)
    assert [c.prompt_tokens for c in completions] == [len(tokenizer(p).input_ids) for p in prompts]
    assert all("\n" not in c.text and c.completion_tokens <= 12 for c in completions)


def test_unknown_model_name_raises_naming_it(server):
    model = {"name": "nope", "path": "no-such-model", "adapter": None}
    with OpenAIBackend(model=model, base_url=server.base_url, max_retries=0) as llm:
        with pytest.raises(RuntimeError, match="no-such-model"):
            llm.generate(["hello"], max_tokens=4)


def test_token_ids_go_in_and_come_out_and_a_rollout_keeps_them(server, tokenizer):
    """backend.token_ids=true: the server's /tokenize is the model's tokenizer, a prompt of ids gets
    the completion its text gets, with the ids it sampled and their log-probabilities; a ReAct
    rollout through it keeps its token trace as on a local engine."""
    from fireact.agents.methods import ReAct
    from fireact.agents.rollout import Rollout
    from fireact.tasks import HotpotQA
    from fireact.tools.recorded_search import RecordedSearch

    prompt = "The capital of France is"
    chat = [{"role": "user", "content": QUESTION}]
    with backend(server, api="completions", token_ids=True) as llm:
        ids = llm.encode(prompt)
        [from_ids] = llm.generate([TokenIds(ids)], max_tokens=16)
        [from_text] = llm.generate([prompt], max_tokens=16)
        chat_ids = llm.encode(chat)
        chat_text = llm.decode(chat_ids)
        task = HotpotQA(n=2)
        trajectories = Rollout(llm, ReAct(format="alpaca", max_rounds=2, max_tokens=24), task,
                               RecordedSearch()).run(task.questions())
        sampled = [llm.decode(t.tokens.ids[a:b]) for t in trajectories for a, b in t.tokens.sampled]
    assert ids == tokenizer(prompt).input_ids
    assert chat_ids == tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_dict=True)["input_ids"]
    assert "<|im_start|>assistant" in chat_text  # special tokens decoded as the model saw them
    assert from_ids.text == from_text.text and from_ids.error is None
    assert len(from_ids.token_ids) == len(from_ids.logprobs) == from_ids.completion_tokens
    assert tokenizer.decode(from_ids.token_ids).startswith(from_ids.text)
    assert all(lp <= 0 for lp in from_ids.logprobs)
    for trajectory in trajectories:
        trace = trajectory.tokens
        assert trace.format == "alpaca" and trace.sampled and len(trace.logprobs) == sum(b - a for a, b in trace.sampled)
        assert tokenizer.decode(trace.ids).startswith("Below is an instruction")
    assert all(text.strip() for text in sampled)
