import json
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from hydra.utils import instantiate
from omegaconf import OmegaConf
from tool_servers import Reply

from fireact.paths import REPO_ROOT
from fireact.tools.base import EMPTY_QUERY, ToolError
from fireact.tools.cache import CachedTool
from fireact.tools.http import Retry
from fireact.tools.wikipedia import NO_MORE, WikipediaTool

EINSTEIN = (
    "Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist. "
    "He is best known for developing the theory of relativity. Einstein also made important contributions "
    "to quantum mechanics.\n\n\n== Early life ==\nEinstein was born in Ulm. His father was a salesman. "
    "In 1880 the family moved to Munich. Einstein excelled at physics and mathematics.\nSee also\n\n"
    "== Career ==\nIn 1905 he published four papers. The relativity papers changed physics."
)
PAGES = {
    "Albert Einstein": EINSTEIN,
    "Ulm": "Ulm is a city in Baden-Württemberg, Germany. It lies on the Danube. Einstein was born there.",
    "Mercury": "Mercury may refer to:\n\nMercury (planet), the closest planet to the Sun\nMercury (element), a chemical element",
    "Mercury (planet)": "Mercury is the first planet from the Sun. It is the smallest planet in the Solar System.",
    "Mercury (element)": "Mercury is a chemical element with symbol Hg. It is a liquid metal.",
}
REDIRECTS = {"Einstein": "Albert Einstein"}


def mediawiki_route(path, params):
    """The MediaWiki Action API's answers (formatversion=2) for prop=extracts and list=search."""
    if params.get("action") != "query" or params.get("format") != "json":
        return Reply(200, {"error": {"code": "badvalue", "info": "Unrecognized value for parameter \"action\"."}})
    if params.get("list") == "search":
        words = re.findall(r"\w+", params["srsearch"].lower())
        hits = [{"ns": 0, "title": title, "pageid": index} for index, (title, text) in enumerate(PAGES.items())
                if any(word in (title + " " + text).lower() for word in words)]
        return Reply(200, {"batchcomplete": True, "query": {"searchinfo": {"totalhits": len(hits)}, "search": hits[: int(params["srlimit"])]}})
    title = params["titles"]
    query: dict = {}
    normalised = title[:1].upper() + title[1:]
    if normalised != title:
        query["normalized"] = [{"fromencoded": False, "from": title, "to": normalised}]
    if normalised in REDIRECTS and params.get("redirects"):
        query["redirects"] = [{"from": normalised, "to": REDIRECTS[normalised]}]
        normalised = REDIRECTS[normalised]
    if "[" in title:
        page = {"title": title, "invalidreason": "The requested page title contains invalid characters: \"[\".", "invalid": True}
    elif normalised in PAGES:
        page = {"pageid": 736, "ns": 0, "title": normalised, "extract": PAGES[normalised]}
    else:
        page = {"ns": 0, "title": normalised, "missing": True}
    return Reply(200, {"batchcomplete": True, "query": {**query, "pages": [page]}})


@pytest.fixture
def server(loopback):
    return loopback(mediawiki_route)


@pytest.fixture
def wiki(server, fast_retry):
    tool = WikipediaTool(base_url=server.url + "/w/api.php", timeout=0.5, retry=fast_retry)
    yield tool
    tool.close()


def test_search_returns_the_first_five_sentences(wiki):
    episode = wiki.new_episode()
    assert episode.run("Search", "Albert Einstein") == (
        "Albert Einstein (14 March 1879 – 18 April 1955) was a German-born theoretical physicist. "
        "He is best known for developing the theory of relativity. Einstein also made important contributions "
        "to quantum mechanics. Einstein was born in Ulm. His father was a salesman."
    )


def test_search_follows_redirects_and_case_like_the_go_box(wiki):
    expected = wiki.run("search", "Albert Einstein")
    assert wiki.run("search", "Einstein") == expected
    assert wiki.run("search", "albert einstein") == expected


def test_a_missing_page_lists_similar_titles(wiki):
    assert wiki.run("search", "Ulm Danube city") == "Could not find Ulm Danube city. Similar: ['Albert Einstein', 'Ulm']."
    assert wiki.run("search", "zzqx") == "Could not find zzqx. Similar: []."
    assert wiki.run("search", "[Ulm]") == "Could not find [Ulm]. Similar: ['Albert Einstein', 'Ulm']."


def test_a_disambiguation_page_lists_similar_titles(wiki):
    assert wiki.run("search", "Mercury") == "Could not find Mercury. Similar: ['Mercury', 'Mercury (planet)', 'Mercury (element)']."


def test_lookup_walks_the_matching_sentences_of_the_last_page(wiki):
    episode = wiki.new_episode()
    assert episode.run("lookup", "physics") == NO_MORE  # nothing searched yet
    episode.run("search", "Albert Einstein")
    assert episode.run("Lookup", "Physics") == "(Result 1 / 2) Einstein excelled at physics and mathematics."
    assert episode.run("lookup", "physics") == "(Result 2 / 2) The relativity papers changed physics."
    assert episode.run("lookup", "physics") == NO_MORE
    assert episode.run("lookup", "Ulm") == "(Result 1 / 1) Einstein was born in Ulm."
    assert episode.run("lookup", "physics") == "(Result 1 / 2) Einstein excelled at physics and mathematics."
    episode.run("search", "Ulm")
    assert episode.run("lookup", "einstein") == "(Result 1 / 1) Einstein was born there."
    episode.run("search", "nothing like it")
    assert episode.run("lookup", "einstein") == NO_MORE


def test_empty_arguments_and_unknown_actions(wiki):
    episode = wiki.new_episode()
    assert episode.run("search", " ") == EMPTY_QUERY
    assert episode.run("lookup", "") == NO_MORE
    with pytest.raises(ToolError, match="offers search"):
        episode.run("finish", "x")
    with pytest.raises(ValueError, match="new_episode"):
        wiki.run("lookup", "physics")


def test_episodes_in_threads_keep_their_own_pages(wiki):
    def episode_of(title, keyword):
        episode = wiki.new_episode()
        episode.run("search", title)
        return [episode.run("lookup", keyword) for _ in range(3)]

    jobs = [("Albert Einstein", "physics"), ("Ulm", "Danube"), ("Mercury (element)", "metal")] * 8
    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(lambda job: episode_of(*job), jobs))
    expected = {job: episode_of(*job) for job in set(jobs)}
    assert results == [expected[job] for job in jobs]
    assert expected[("Ulm", "Danube")] == ["(Result 1 / 1) It lies on the Danube.", NO_MORE, NO_MORE]


def test_server_errors_are_retried(server, wiki):
    server.script = [Reply(503, "Service Unavailable"), Reply(429, {"error": "slow down"}, headers={"Retry-After": "0"}), Reply(reset=True)]
    assert wiki.run("search", "Ulm").startswith("Ulm is a city")
    assert len(server.requests) == 4


def test_failures_end_in_tool_errors(server, fast_retry):
    impatient = WikipediaTool(base_url=server.url + "/w/api.php", timeout=0.2, retry=Retry(max_retries=1, backoff=0.01))
    server.script = [Reply(delay=0.6, body={})] * 2
    with pytest.raises(ToolError, match="Wikipedia request failed after 2 attempts.*timeout"):
        impatient.run("search", "Ulm")
    server.script = [Reply(200, "<html>Wikimedia Error</html>")]
    with pytest.raises(ToolError, match="not JSON"):
        impatient.run("search", "Ulm")
    server.script = [Reply(200, {"error": {"code": "maxlag", "info": "Waiting for a database server"}})]
    with pytest.raises(ToolError, match="Waiting for a database server"):
        impatient.run("search", "Ulm")


def test_a_cached_tool_fetches_each_page_once_and_lookup_still_works(server, wiki, tmp_path):
    cached = CachedTool(wiki, tmp_path / "calls.sqlite")
    first, second = cached.new_episode(), cached.new_episode()
    assert first.run("search", "Albert Einstein") == second.run("search", "Albert Einstein")
    requests = len(server.requests)
    assert second.run("lookup", "Ulm") == "(Result 1 / 1) Einstein was born in Ulm."
    assert CachedTool(WikipediaTool(base_url=server.url + "/w/api.php"), tmp_path / "calls.sqlite").new_episode().run(
        "search", "Albert Einstein") == first.run("search", "Albert Einstein")
    assert len(server.requests) == requests == 1
    assert json.loads(cached.run("page", "Ulm"))["title"] == "Ulm"


def test_hydra_config_builds_a_cached_tool(server, tmp_path):
    cfg = OmegaConf.load(REPO_ROOT / "conf/tool/wikipedia.yaml")
    cfg.cache_path = str(tmp_path / "calls.sqlite")
    cfg.tool.base_url = server.url + "/w/api.php"
    tool = instantiate(cfg)
    assert isinstance(tool, CachedTool) and isinstance(tool.tool, WikipediaTool)
    episode = tool.new_episode()
    assert episode.run("search", "Ulm").startswith("Ulm is a city")
    assert episode.run("lookup", "danube") == "(Result 1 / 1) It lies on the Danube."
