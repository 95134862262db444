"""`tool=retriever` and `python -m fireact.retriever`: the real server on loopback over a small corpus
(the API round trip, Search-R1's observation, the index built once, the call cache replaying), and
a loopback server that misbehaves on cue (batching, retries, malformed replies)."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from tool_servers import Reply

from fireact.child_server import free_port
from fireact.paths import REPO_ROOT
from fireact.retriever.corpus import Passage, read_corpus, write_corpus
from fireact.retriever.index import BM25Index
from fireact.retriever.process import serving
from fireact.tools.base import EMPTY_QUERY, NO_RESULT, ToolError
from fireact.tools.cache import cached
from fireact.tools.retriever import RetrieverSearch, passages_text

PASSAGES = [
    Passage("0", "Arthur's Magazine\nArthur's Magazine (1844-1846) was an American literary periodical."),
    Passage("1", "First for Women\nFirst for Women is a woman's magazine started in 1989."),
    Passage("2", "Milhouse Van Houten\nMilhouse was named after U.S. president Richard Nixon."),
    Passage("3", "Eiffel Tower\nThe Eiffel Tower is 330 metres tall."),
    Passage("4", "Pavel Urysohn\nPavel Urysohn was a Soviet mathematician."),
]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`python -m fireact.retriever` over PASSAGES on a free port, its index cached in a fresh folder."""
    root = tmp_path_factory.mktemp("retriever")
    corpus = root / "corpus.jsonl"
    write_corpus(corpus, PASSAGES)
    env = {"FIREACT_CACHE_DIR": str(root / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    with serving(free_port(), corpus, [f"hydra.run.dir={root / 'run'}"], env) as url:
        yield url, corpus, root / "cache"


def test_the_api_answers_as_search_r1s_server_does(server):
    url, _, _ = server
    scored = httpx.post(f"{url}/retrieve", json={"queries": ["Who named Milhouse?", "tallest tower"], "topk": 2,
                                                 "return_scores": True}).json()["result"]
    assert [len(hits) for hits in scored] == [1, 1]  # passages sharing no term are left out
    assert scored[0][0]["document"] == {"id": "2", "contents": PASSAGES[2].contents} and scored[0][0]["score"] > 0
    plain = httpx.post(f"{url}/retrieve", json={"queries": ["magazine women"]}).json()["result"]
    assert plain[0][0] == PASSAGES[1].to_dict() and len(plain[0]) == 2  # the default topk (3), plain documents
    assert httpx.get(f"{url}/info").json()["passages"] == len(PASSAGES)


def test_the_tool_shows_passages_as_search_r1_does_and_the_cache_replays_them(server, tmp_path):
    url, corpus, _ = server
    tool = cached(RetrieverSearch(url=f"{url}/retrieve", topk=2), cache_path=str(tmp_path / "calls.sqlite"))
    observation = tool.run("search", "magazine  started")
    assert observation == ("Doc 1(Title: First for Women) First for Women is a woman's magazine started in 1989.\n"
                           "Doc 2(Title: Arthur's Magazine) Arthur's Magazine (1844-1846) was an American literary "
                           "periodical.")
    assert tool.run("search", "zebra") == NO_RESULT and tool.run("search", "  ") == EMPTY_QUERY
    assert tool.tool.result_config()["corpus_hash"] == httpx.get(f"{url}/info").json()["corpus_hash"]
    tool.close()
    elsewhere = RetrieverSearch(url="http://127.0.0.1:9/retrieve", topk=2)  # port 9: nothing answers
    elsewhere.server = tool.tool.server  # a server of the same corpus: the same cache key
    offline = cached(elsewhere, cache_path=str(tmp_path / "calls.sqlite"))
    assert offline.run("search", "magazine  started") == observation  # replayed
    offline.close()


def test_the_index_is_built_once_per_corpus_content(server, tmp_path):
    _, corpus, cache = server
    again = BM25Index(corpus, cache_dir=cache / "retriever")  # the server built it
    assert not again.built and again.search(["Richard Nixon"], 1)[0][0][0] == PASSAGES[2]
    changed = tmp_path / "changed.jsonl"
    write_corpus(changed, PASSAGES[:3])
    assert BM25Index(changed, cache_dir=cache / "retriever").built


def test_a_corpus_line_that_is_not_a_passage_is_named(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "0", "contents": "a\\nb"}\n{"id": "1", "text": "no contents"}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl line 2 is not a passage .*\"contents\": \"title"):
        read_corpus(bad)


def echo(path, body):
    """A Search-R1 server whose passage for each query is the query itself."""
    return Reply(body={"result": [[{"document": {"id": q, "contents": f"{q}\nabout {q}"}, "score": 1.0}]
                                  for q in body["queries"]]})


def test_concurrent_searches_go_as_one_request(loopback, fast_retry):
    server = loopback(echo)
    tool = RetrieverSearch(url=f"{server.url}/retrieve", retry=fast_retry, batch_window_s=0.3)
    queries = [f"question {i}" for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        observations = list(pool.map(lambda q: tool.run("search", q), queries))
    assert observations == [passages_text([{"contents": f"{q}\nabout {q}"}]) for q in queries]
    posts = [body for path, body in server.requests if path == "/retrieve"]
    assert len(posts) == 1 and sorted(posts[0]["queries"]) == queries and posts[0]["topk"] == 3
    tool.close()


def test_a_batch_is_sent_once_it_is_full(loopback, fast_retry):
    server = loopback(echo)
    tool = RetrieverSearch(url=f"{server.url}/retrieve", retry=fast_retry, batch_window_s=30.0, max_batch=2)
    with ThreadPoolExecutor(2) as pool:
        started = time.monotonic()
        list(pool.map(lambda q: tool.run("search", q), ["a b", "c d"]))
    assert time.monotonic() - started < 10  # not the 30 s window
    tool.close()


def test_faults_are_retried_then_named(loopback, fast_retry):
    server = loopback(echo)
    server.script = [Reply(status=503, body={"error": "busy"}), Reply(reset=True)]
    tool = RetrieverSearch(url=f"{server.url}/retrieve", retry=fast_retry, batch_window_s=0.0)
    assert tool.run("search", "tower") == "Doc 1(Title: tower) about tower"  # after a 503 and a reset
    server.script = [Reply(body={"result": "not lists"})]
    with pytest.raises(ToolError, match="not \\{\"result\": \\[...\\]\\} with one list per query"):
        tool.run("search", "tower")
    server.script = [Reply(body={"result": [[{"document": {"title": "no contents"}}]]})]
    with pytest.raises(ToolError, match="passage list that is not"):
        tool.run("search", "tower")
    server.route = lambda path, body: Reply(status=500, body={"error": "down"})
    with pytest.raises(ToolError, match="retriever request failed after 4 attempts"):
        tool.run("search", "tower")
    tool.close()


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="tool.tool.topk=0"):
        RetrieverSearch(topk=0)
    with pytest.raises(ValueError, match="tool.tool.url='localhost:8000' is not an http"):
        RetrieverSearch(url="localhost:8000")


def test_searches_of_many_threads_each_get_their_own_answer(loopback, fast_retry):
    server = loopback(echo)
    tool = RetrieverSearch(url=f"{server.url}/retrieve", retry=fast_retry, batch_window_s=0.005, max_batch=4)
    errors = []

    def search(i):
        for j in range(10):
            query = f"q{i} {j}"
            if tool.run("search", query) != f"Doc 1(Title: {query}) about {query}":
                errors.append(query)

    threads = [threading.Thread(target=search, args=(i,)) for i in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len([p for p, _ in server.requests if p == "/retrieve"]) < 60
    tool.close()


def test_generate_searches_a_local_corpus(server, compose_cfg, tmp_path):
    """A teacher (a loopback OpenAI-compatible server) generating over the corpus: tool=retriever
    needs no paid search API. Each question searches once, then answers."""
    from fireact.generate import generate
    from fireact.trajectory_files import read_jsonl
    from tests.llm.servers import FaultServer
    from tests.llm.servers import Reply as LLMReply

    def teacher(attempt, request):
        searched = "Milhouse was named" in request["prompt"]  # the passage the search returns
        return LLMReply(text=" Done.\nAction: finish[Richard Nixon]" if searched else " Look.\nAction: search[Milhouse Nixon]")

    url, _, _ = server
    with FaultServer(teacher) as llm:
        result = generate(compose_cfg("generate", "task.n=2", "method.max_rounds=3", "model=gpt35", "model.path=teacher",
                                      "backend=openai", "backend.api=completions", f"backend.base_url={llm.base_url}",
                                      "tool=retriever", f"tool.tool.url={url}/retrieve", "tool.cache=false", "~tracker",
                                      f"output_dir={tmp_path / 'out'}"))
    written = [t for name in ("trajectories.jsonl", "failures.jsonl") if (tmp_path / "out" / name).exists()
               for t in read_jsonl(tmp_path / "out" / name)[0]]
    assert result["attempted"] == 2 and len(written) == 2
    for trajectory in written:
        assert trajectory.tool == "retriever" and trajectory.steps[0].argument == "Milhouse Nixon"
        assert trajectory.steps[0].observation.startswith("Doc 1(Title: Milhouse Van Houten) Milhouse was named")


def test_the_embedded_model_runs_search_r1s_protocol_over_the_server(server, compose_cfg, tmp_path):
    """evaluate method=search_r1 tool=retriever on the embedded model (hf, token in, token out): the
    one assistant turn starts with Search-R1's instruction, and whatever the harness added (the
    information blocks, the invalid-action message) is outside the spans the policy sampled."""
    from fireact.evaluate.run import evaluate
    from fireact.trajectory_files import read_jsonl
    from transformers import AutoTokenizer
    from fireact.llm.embedded import resolve_model_path

    url, _, _ = server
    evaluate(compose_cfg("evaluate", "method=search_r1", "method.max_rounds=2", "method.max_tokens=24", "task.n=1",
                         "tool=retriever", f"tool.tool.url={url}/retrieve", "tool.cache=false", "~tracker",
                         f"output_dir={tmp_path / 'out'}"))
    [trajectory] = [t for name in ("trajectories.jsonl", "failures.jsonl") if (tmp_path / "out" / name).exists()
                    for t in read_jsonl(tmp_path / "out" / name)[0]]
    assert trajectory.method == "search_r1" and 1 <= len(trajectory.steps) <= 2
    # What the EM compares with: the corpus, the retriever and top-k, the protocol (its manifest).
    manifest = json.loads((tmp_path / "out" / "summary.json").read_text())["manifest"]
    corpus_hash = httpx.get(f"{url}/info").json()["corpus_hash"]
    assert json.loads(manifest["tool_config"]) == {"topk": 3, "corpus_hash": corpus_hash, "retriever": "bm25"}
    assert (manifest["method"], manifest["format"], manifest["max_rounds"], manifest["metric"]) == \
        ("search_r1", "search_r1", 2, "fireact.tasks.hotpotqa.HotpotQA.score")
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2-135m-instruct"))
    trace = trajectory.tokens
    assert trace.format == "search_r1"
    assert tokenizer.decode(trace.ids).startswith("<|im_start|>system\n")
    assert "<|im_start|>user\nAnswer the given question." in tokenizer.decode(trace.ids)
    harness = tokenizer.decode([i for i, sampled in zip(trace.ids, trace.mask()) if not sampled])
    if len(trajectory.steps) == 2:  # a first reply that searched, or one with neither tag
        assert "<information>" in harness or "My previous action is invalid" in harness


def test_a_dense_index_finds_a_passage_by_its_words_and_embeds_the_corpus_once(tmp_path):
    """index=e5's DenseIndex with the embedded model as its encoder (the one on disk offline): a
    passage's own sentence finds it first; a second index over the same corpus loads the embeddings."""
    from fireact.llm.embedded import resolve_model_path
    from fireact.retriever.index import DenseIndex

    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, PASSAGES)
    encoder = str(resolve_model_path("embedded:smollm2-135m-instruct"))
    index = DenseIndex(corpus, encoder=encoder, cache_dir=tmp_path / "cache")
    queries = [p.contents.split("\n", 1)[1] for p in PASSAGES]
    found = index.search([*queries, "  "], 2)
    assert [hits[0][0] for hits in found[:-1]] == PASSAGES and found[-1] == []
    assert all(len(hits) == 2 and hits[0][1] >= hits[1][1] for hits in found[:-1])
    again = DenseIndex(corpus, encoder=encoder, cache_dir=tmp_path / "cache")
    assert index.built and not again.built and again.search(queries[:1], 1)[0][0][0] == PASSAGES[0]
    assert again.name == f"dense:{encoder}"


def test_a_dense_index_without_its_encoder_says_how_to_get_it(tmp_path):
    from fireact.retriever.index import DenseIndex

    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, PASSAGES)
    with pytest.raises(ValueError, match=r"index.encoder='.*no-encoder' could not be loaded .* or use index=bm25"):
        DenseIndex(corpus, encoder=str(tmp_path / "no-encoder"))


def test_a_command_runs_while_a_server_is_up_and_its_exit_status_is_returned(tmp_path):
    """`python -m fireact.retriever.process` (what `make search_r1` runs the experiment in)."""
    import subprocess
    import sys

    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, PASSAGES)
    port = free_port()
    probe = (f"import httpx, sys; r = httpx.post('http://127.0.0.1:{port}/retrieve', json={{'queries': ['Eiffel']}}); "
             f"sys.exit(7 if r.json()['result'][0][0]['id'] == '3' else 1)")
    env = {**os.environ, "FIREACT_CACHE_DIR": str(tmp_path / "cache"),
           "PYTHONPATH": os.pathsep.join([str(REPO_ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-m", "fireact.retriever.process", "--port", str(port), "--corpus", str(corpus),
                           "--", sys.executable, "-c", probe], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 7, done.stdout + done.stderr
    assert f"retriever up at http://127.0.0.1:{port}/retrieve" in done.stdout
