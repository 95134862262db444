"""OpenAIBackend against loopback servers that misbehave for real (tests/llm/servers.py)."""

from __future__ import annotations

import logging
import threading

import pytest
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.errors import Unavailable
from fireact.llm.openai_backend import OpenAIBackend
from fireact.paths import CONF_DIR
from fireact.tasks import HotpotQA
from fireact.tasks.base import Question
from fireact.tools.base import Tool

from .servers import FaultServer, Reply, prompt_key

MODEL = {"name": "test-model", "path": "served-test-model", "adapter": None, "price": {}}
SECRET = "sk-test-SECRET-0123456789"
FAST_RETRIES = dict(timeout_s=0.5, max_retries=3, retry_budget_s=20.0, backoff_initial_s=0.01, backoff_max_s=0.05)


@pytest.fixture
def api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)
    return SECRET


def backend(server: FaultServer, **config) -> OpenAIBackend:
    return OpenAIBackend(model=MODEL, base_url=server.base_url, **{**FAST_RETRIES, **config})


def test_429_waits_for_retry_after_then_succeeds(api_key):
    respond = lambda attempt, _: Reply(429, {"Retry-After": "1"}) if attempt == 0 else Reply(text="fine")
    with FaultServer(respond) as server, backend(server) as llm:
        [completion] = llm.generate(["q"])
    assert completion.text == "fine" and completion.error is None
    first, second = server.received
    assert second.at - first.at >= 0.9  # waited for Retry-After (1 s), not the 0.01 s backoff


def test_500_then_success(api_key):
    respond = lambda attempt, _: Reply(500, body=b'{"error": {"message": "boom"}}') if attempt < 2 else Reply()
    with FaultServer(respond) as server, backend(server) as llm:
        [completion] = llm.generate(["q"])
    assert completion.error is None and completion.text == "ok"
    assert len(server.received) == 3


def test_timeout_is_retried(api_key):
    respond = lambda attempt, _: Reply(delay_s=3.0) if attempt == 0 else Reply(text="second try")
    with FaultServer(respond) as server, backend(server, timeout_s=0.5) as llm:
        [completion] = llm.generate(["q"])
    assert completion.text == "second try" and completion.error is None
    assert len(server.received) == 2


def test_malformed_json_sets_error_and_the_batch_goes_on(api_key):
    respond = lambda _, request: Reply(body=b'{"choices": [{"text": ') if "bad" in prompt_key(request) else Reply()
    with FaultServer(respond) as server, backend(server, api="completions", max_retries=1) as llm:
        good, bad = llm.generate(["good", "bad"])
    assert good.error is None and good.text == "ok"
    assert bad.error and bad.text == ""
    assert len(server.requests_for("bad")) == 2  # a malformed body may be a transient proxy fault: retried


def test_persistent_500_sets_error_and_the_run_goes_on(api_key):
    respond = lambda _, request: Reply(500) if "FAIL" in prompt_key(request) else Reply(text="answer")
    with FaultServer(respond) as server, backend(server, max_retries=2) as llm:
        completions = llm.generate(["one", "FAIL", "two"])
        again = llm.generate(["three"])  # the backend is still usable afterwards
    assert [c.text for c in completions] == ["answer", "", "answer"]
    assert completions[1].error and "500" in completions[1].error and completions[1].outage  # no result: rerun
    assert completions[0].error is None and completions[2].error is None
    assert len(server.requests_for("FAIL")) == 3  # the first try and max_retries=2 retries
    assert again[0].text == "answer"


def test_retry_budget_bounds_the_waiting(api_key):
    respond = lambda attempt, _: Reply(429, {"Retry-After": "30"})
    with FaultServer(respond) as server, backend(server, retry_budget_s=1.0) as llm:
        [completion] = llm.generate(["q"])
    assert completion.error and "RateLimitError" in completion.error
    assert len(server.received) == 1  # a 30 s wait does not fit a 1 s budget: no retry


def test_bad_request_is_not_retried(api_key):
    respond = lambda attempt, _: Reply(400, body=b'{"error": {"message": "context too long"}}')
    with FaultServer(respond) as server, backend(server) as llm:
        [completion] = llm.generate(["q"])
    assert "context too long" in completion.error and not completion.outage  # the prompt's own result
    assert len(server.received) == 1


def test_a_server_gone_is_checked_and_the_requests_after_the_first_give_up_at_once(api_key):
    with FaultServer(lambda *_: Reply(text="up")) as server, backend(server) as llm:
        llm.check_reachable()  # the server answers (a 501 to the models list is an answer)
        assert llm.generate(["q"])[0].text == "up"
        server.stop()
        with pytest.raises(Unavailable, match=f"{server.base_url} cannot be reached .*Connection refused"):
            llm.check_reachable()
        [first] = llm.generate(["a"])  # retried, then given up: the server is taken as down
        rest = llm.generate(["b", "c"])
    assert first.outage and "APIConnectionError" in first.error and server.base_url in first.error
    assert all(c.outage and c.error.startswith("not sent: the server was down") for c in rest)


def test_wrong_key_raises_without_showing_it(api_key, caplog):
    body = b'{"error": {"message": "Incorrect API key provided: ' + SECRET.encode() + b'"}}'
    respond = lambda attempt, _: Reply(401, body=body)
    with FaultServer(respond) as server, backend(server) as llm:
        with pytest.raises(RuntimeError, match="API key") as raised:
            llm.generate(["q1", "q2"])
    assert SECRET not in str(raised.value) and "served-test-model" in str(raised.value)


def test_key_never_in_errors_logs_or_repr(api_key, caplog):
    # A server that echoes the Authorization header in its error body, for ever.
    respond = lambda _, request: Reply(500, body=b'{"error": {"message": "%s"}}' % server_auth[0].encode())
    server_auth = []
    caplog.set_level(logging.DEBUG)
    with FaultServer(respond) as server, backend(server, max_retries=1) as llm:
        server_auth.append(f"Bearer {SECRET}")
        [completion] = llm.generate(["q"])
        shown = repr(llm)
    assert server.received[0].headers["authorization"] == f"Bearer {SECRET}"  # the key was sent...
    assert completion.error and "***" in completion.error  # ...echoed back, and hidden
    assert SECRET not in completion.error and SECRET not in shown and SECRET not in caplog.text


def test_missing_key_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("MY_LLM_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="OPENAI_API_KEY"):
        OpenAIBackend(model=MODEL)
    with pytest.raises(ValueError, match="MY_LLM_KEY"):
        OpenAIBackend(model=MODEL, base_url="https://llm.example.org/v1", api_key_env="MY_LLM_KEY")


def test_local_server_needs_no_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with FaultServer(lambda *_: Reply(text="local")) as server, backend(server) as llm:
        assert llm.generate(["q"])[0].text == "local"
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)  # the SDK's variable counts too
        with OpenAIBackend(model=MODEL) as from_env:
            assert from_env.generate(["q"])[0].text == "local"
    assert [r.headers["authorization"] for r in server.received] == ["Bearer EMPTY"] * 2


def test_endpoints_stop_strings_and_usage(api_key):
    stops = ["\nObservation", "\nA1", "\nA2", "\nA3", "\nA4", "STOP5"]
    respond = lambda *_: Reply(text="Thought: search.\nAction: search[x] STOP5 more text")
    with FaultServer(respond) as server:
        with backend(server, api="completions") as llm:
            raw, chat = llm.generate(["few-shot text", [{"role": "user", "content": "hi"}]], stop=stops, max_tokens=7)
        with backend(server, api="chat") as llm:
            [as_message] = llm.generate(["few-shot text"], stop=stops)
    paths = [r.path for r in server.received]
    # The first two requests go out concurrently, in either order.
    assert sorted(paths[:2]) == ["/v1/chat/completions", "/v1/completions"] and paths[2] == "/v1/chat/completions"
    sent = next(r.json for r in server.received if r.path == "/v1/completions")
    assert sent["model"] == "served-test-model" and sent["max_tokens"] == 7 and sent["temperature"] == 0.0
    assert sent["stop"] == stops[:4]  # the API's limit; the fifth and sixth are cut here
    assert server.received[2].json["messages"] == [{"role": "user", "content": "few-shot text"}]
    for completion in (raw, chat, as_message):
        assert completion.text == "Thought: search.\nAction: search[x] "
        assert completion.finish_reason == "stop"
    assert (raw.prompt_tokens, raw.completion_tokens) == (2, 7)  # what the server's usage said


def test_concurrency_limit(api_key):
    together = threading.Barrier(4, timeout=20)

    def respond(attempt, request):
        together.wait()  # passes only when 4 requests are in flight at once
        return Reply(text=prompt_key(request))

    prompts = [f"p{i}" for i in range(8)]
    with FaultServer(respond) as server, backend(server, api="completions", concurrency=4) as llm:
        completions = llm.generate(prompts)
    assert [c.text for c in completions] == prompts  # in order
    assert server.max_in_flight == 4


def test_built_from_the_hydra_config(api_key):
    cfg = OmegaConf.create({"model": OmegaConf.load(CONF_DIR / "model/gpt35.yaml"),
                            "backend": OmegaConf.load(CONF_DIR / "backend/openai.yaml")})
    with FaultServer(lambda *_: Reply(text="from config")) as server:
        cfg.backend.base_url = server.base_url
        with instantiate(cfg.backend) as llm:
            assert isinstance(llm, OpenAIBackend)
            assert (llm.model, llm.model_id) == ("gpt-3.5-turbo-0613", "gpt-3.5-turbo-0613")
            assert llm.generate(["q"])[0].text == "from config"
    with pytest.raises(InstantiationException, match="backend.api='embeddings'"):
        instantiate(cfg.backend, api="embeddings")


class NamedAfter(Tool):
    name = "named_after"

    def run(self, action, argument):
        return "named after Richard Nixon"


def test_in_a_rollout_a_request_being_retried_holds_no_other_question(api_key):
    """Question 1's first request fails twice (a 500 after 1 s) while question 2 goes through
    its four rounds: one prompt per call, `concurrency` calls at once (LLM.parallel_calls)."""

    def respond(attempt, request):
        prompt = prompt_key(request)
        if "Who named Milhouse?" in prompt:
            return Reply(status=500, delay_s=1.0) if attempt < 2 else Reply(text=" x\nAction: finish[Richard Nixon]")
        done = prompt.count("Observation: named after") == 3
        return Reply(text=" x\nAction: finish[Arthur's Magazine]" if done else " x\nAction: search[milhouse]")

    questions = [Question("1", "Who named Milhouse?", "Richard Nixon"), Question("2", "Which is first?", "Arthur's Magazine")]
    finished = []
    with FaultServer(respond) as server, backend(server, api="completions") as llm:
        one, two = Rollout(llm, ReAct(), HotpotQA(), NamedAfter()).run(questions, on_finish=lambda t: finished.append(t.qid))
    assert llm.parallel_calls == 8 and finished == ["2", "1"]
    assert (one.em, two.em, two.turns) == (1.0, 1.0, 4)
    last_of_two = max(r.at for r in server.received if "Which is first?" in prompt_key(r.json))
    assert last_of_two < server.requests_for("Who named Milhouse?")[-1].at
