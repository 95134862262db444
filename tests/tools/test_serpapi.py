import logging
import traceback

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf

from fireact.paths import REPO_ROOT
from fireact.tools.base import EMPTY_QUERY, NO_RESULT, ToolError
from fireact.tools.cache import CachedTool
from fireact.tools.http import Retry
from fireact.tools.serpapi import SerpAPISearch

from tool_servers import Reply

KEY = "sk-loopback-3f9a7c1e5d"
METADATA = {"search_metadata": {"id": "6563f1", "status": "Success", "total_time_taken": 0.91}}
RESULTS = {
    "capital of france": {**METADATA, "answer_box": {"type": "organic_result", "answer": "Paris", "snippet": "Paris is the capital."},
                          "organic_results": [{"position": 1, "title": "Paris", "snippet": "Paris, France's capital..."}]},
    "who wrote hamlet": {**METADATA, "answer_box": {"type": "organic_result", "title": "Hamlet", "snippet": "Hamlet is a tragedy by William Shakespeare."}},
    "tallest mountain": {**METADATA, "answer_box": {"type": "organic_result", "snippet_highlighted_words": ["Mount Everest", "8,849 m"]}},
    "fireact paper": {**METADATA, "organic_results": [{"position": 1, "title": "FireAct", "link": "https://arxiv.org/abs/2310.05915",
                                                       "snippet": "FireAct: Toward Language Agent Fine-tuning."}]},
    "no snippet": {**METADATA, "organic_results": [{"position": 1, "title": "A page without snippet"}]},
}
EMPTY = {
    **METADATA,
    "search_information": {"organic_results_state": "Fully empty", "total_results": 0},
    "error": "Google hasn't returned any results for this query.",
}


def serpapi_route(path, params):
    if path != "/search" or params.get("engine") != "google":
        return Reply(400, {"error": "Unsupported `engine` parameter."})
    if params.get("api_key") != KEY:
        return Reply(401, {"error": "Invalid API key. Your API key should be here: https://serpapi.com/manage-api-key"})
    return Reply(200, RESULTS.get(params["q"].lower(), EMPTY))


@pytest.fixture
def server(loopback):
    return loopback(serpapi_route)


@pytest.fixture
def search(server, fast_retry, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    tool = SerpAPISearch(base_url=server.url, timeout=0.5, retry=fast_retry)
    yield tool
    tool.close()


@pytest.mark.parametrize(
    "query, observation",
    [
        ("capital of France", "Paris"),  # answer_box.answer first
        ("who wrote hamlet", "Hamlet is a tragedy by William Shakespeare."),  # then answer_box.snippet
        ("tallest mountain", "Mount Everest"),  # then the first highlighted word
        ("fireact paper", "FireAct: Toward Language Agent Fine-tuning."),  # then the first organic snippet
        ("no snippet", NO_RESULT),
        ("qqzx nothing", NO_RESULT),  # Google found nothing
    ],
)
def test_observation_is_taken_in_fireacts_order(search, query, observation):
    assert search.run("search", query) == observation


def test_sends_the_google_parameters(search, server):
    search.run("Search", "capital  of\nfrance")
    path, params = server.requests[-1]
    assert path == "/search"
    assert params == {"engine": "google", "q": "capital of france", "api_key": KEY, "google_domain": "google.com", "gl": "us", "hl": "en"}


def test_an_empty_query_is_answered_without_a_request(search, server):
    assert search.run("search", "  ") == EMPTY_QUERY
    assert server.requests == []


def test_a_missing_key_fails_at_construction_naming_the_variable(monkeypatch):
    monkeypatch.delenv("SERPAPI_API_KEY", raising=False)
    with pytest.raises(ValueError, match="SERPAPI_API_KEY"):
        SerpAPISearch()


def test_429_waits_what_retry_after_says(server, search, monkeypatch):
    # Backoff alone (10 s) would pass the 5 s budget at once: success proves Retry-After: 0 was used.
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    patient = SerpAPISearch(base_url=server.url, timeout=0.5, retry=Retry(max_retries=2, backoff=10, max_total_time=5))
    server.script = [Reply(429, {"error": "Too many requests"}, headers={"Retry-After": "0"})]
    assert patient.run("search", "capital of france") == "Paris"
    assert len(server.requests) == 2


def test_a_retry_after_longer_than_the_budget_gives_up_at_once(server, search):
    server.script = [Reply(429, {"error": "Your account has run out of searches."}, headers={"Retry-After": "3600"})]
    with pytest.raises(ToolError, match="asked to wait 3600s"):
        search.run("search", "capital of france")
    assert len(server.requests) == 1


def test_a_500_then_success_is_retried(server, search):
    server.script = [Reply(500, {"error": "Internal error"}), Reply(503, "Service Unavailable")]
    assert search.run("search", "capital of france") == "Paris"
    assert len(server.requests) == 3


def test_errors_that_persist_end_in_a_tool_error_after_the_retries(server, search):
    server.script = [Reply(502, "Bad Gateway")] * 10
    with pytest.raises(ToolError, match=r"SerpAPI request failed after 4 attempts.*HTTP 502"):
        search.run("search", "capital of france")
    assert len(server.requests) == 4  # max_retries=3


def test_a_timeout_is_retried_then_reported(server, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    impatient = SerpAPISearch(base_url=server.url, timeout=0.2, retry=Retry(max_retries=1, backoff=0.01))
    server.script = [Reply(delay=0.6, body=RESULTS["capital of france"])] * 2
    with pytest.raises(ToolError, match="no answer within the 0.2s timeout"):
        impatient.run("search", "capital of france")
    assert len(server.requests) == 2
    server.script = [Reply(delay=0.6, body=RESULTS["capital of france"])]
    assert impatient.run("search", "capital of france") == "Paris"


def test_a_connection_reset_is_retried(server, search):
    server.script = [Reply(reset=True), Reply(reset=True)]
    assert search.run("search", "capital of france") == "Paris"
    server.script = [Reply(reset=True)] * 4
    with pytest.raises(ToolError, match="connection failed"):
        search.run("search", "capital of france")


def test_a_refused_connection_is_a_tool_error(fast_retry, monkeypatch, loopback):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    gone = loopback(serpapi_route)
    gone.close()  # nothing listens on this port any more
    with pytest.raises(ToolError, match="connection failed"):
        SerpAPISearch(base_url=gone.url, timeout=0.5, retry=fast_retry).run("search", "capital of france")


def test_malformed_json_is_a_tool_error(server, search):
    server.script = [Reply(200, '{"answer_box": {"answer": "Par')]
    with pytest.raises(ToolError, match="not JSON"):
        search.run("search", "capital of france")
    assert len(server.requests) == 1


def test_a_rejected_key_fails_at_once(server, fast_retry, monkeypatch):
    monkeypatch.setenv("SERPAPI_API_KEY", "sk-wrong-key-77")
    with pytest.raises(ToolError, match="HTTP 401: Invalid API key"):
        SerpAPISearch(base_url=server.url, timeout=0.5, retry=fast_retry).run("search", "capital of france")
    assert len(server.requests) == 1


def test_the_key_appears_in_no_error_log_or_observation(server, search, caplog):
    caplog.set_level(logging.DEBUG)
    failures = []
    for script in ([Reply(500, {"error": f"echo {KEY}"})] * 4, [Reply(200, f'{{"oops {KEY}')]):
        server.script = list(script)
        with pytest.raises(ToolError) as caught:
            search.run("search", "capital of france")
        failures.append("".join(traceback.format_exception(caught.value)))
    server.script = [Reply(200, {"organic_results": [{"snippet": f"leak {KEY}"}]})]
    observation = search.run("search", "capital of france")
    assert "echo ***" in failures[0] and "oops ***" in failures[1] and observation == "leak ***"
    assert "HTTP Request: GET" in caplog.text and "api_key=***" in caplog.text  # httpx logged each request
    for text in failures + [observation, caplog.text]:
        assert KEY not in text


def test_hydra_config_builds_a_cached_client(server, monkeypatch, tmp_path):
    monkeypatch.setenv("SERPAPI_API_KEY", KEY)
    cfg = OmegaConf.load(REPO_ROOT / "conf/tool/serpapi.yaml")
    cfg.cache_path = str(tmp_path / "calls.sqlite")
    cfg.tool.base_url = server.url
    tool = instantiate(cfg)
    assert isinstance(tool, CachedTool) and isinstance(tool.tool, SerpAPISearch)
    assert tool.run("search", "capital of france") == tool.run("search", "capital of france") == "Paris"
    assert len(server.requests) == 1
    for stored in tmp_path.iterdir():  # the database and its WAL
        assert KEY.encode() not in stored.read_bytes()
    cfg.cache = False
    assert isinstance(instantiate(cfg), SerpAPISearch)
