"""ReAct's Wikipedia tool over the MediaWiki API: search[entity] and lookup[keyword].

search[entity]: the page titled `entity` (redirects followed; when no page has exactly that
title, a search hit whose title equals it ignoring case, as Wikipedia's "Go" box does), as
plain text without headings or paragraphs of two words or fewer; the observation is its
first `sentences` sentences. No such page, or a disambiguation page ("... may refer to:"):
"Could not find {entity}. Similar: [titles]." with the top `similar` full-text search hits.
lookup[keyword]: the next sentence of the episode's last found page containing the keyword
(ignoring case) as "(Result i / n) sentence"; "No more results." when none is left or no
page was found. A different keyword starts again from its first match.

Per-question state: the agent calls `tool.new_episode()` once per question and talks to the
WikipediaEpisode it returns; episodes share the tool's HTTP client and cache. The shared
tool answers "search" and the internal "page" (the page as JSON: what episodes fetch and
caches store), and refuses "lookup", which only makes sense inside an episode.
"""

from __future__ import annotations

import json
from typing import Any

from fireact.tools.base import EMPTY_QUERY, Tool, ToolError
from fireact.tools.http import JSONClient, Retry

NO_MORE = "No more results."


def clean_extract(extract: str) -> list[str]:
    """Paragraphs of a plain-text extract, headings and paragraphs of <= 2 words left out."""
    lines = (line.strip() for line in extract.split("\n"))
    return [line for line in lines if len(line.split()) > 2 and not line.startswith("==")]


def split_sentences(paragraphs: list[str]) -> list[str]:
    """ReAct's rule: split on ". ", put the full stop back."""
    sentences = []
    for paragraph in paragraphs:
        for piece in paragraph.split(". "):
            piece = piece.strip()
            if piece:
                sentences.append(piece if piece.endswith((".", "!", "?")) else piece + ".")
    return sentences


def not_found(entity: str, similar: list[str]) -> str:
    return f"Could not find {entity}. Similar: {similar}."


class WikipediaTool(Tool):
    name = "wikipedia"
    actions = ("search", "lookup")
    speed_settings = ("timeout", "retry")

    def __init__(
        self,
        base_url: str = "https://en.wikipedia.org/w/api.php",
        sentences: int = 5,
        similar: int = 5,
        timeout: float = 20.0,
        retry: Retry | None = None,
        user_agent: str = "fireact/0.1 (research language agent; https://github.com/anchen1011/FireAct)",
    ) -> None:
        self.base_url = base_url
        self.sentences = sentences
        self.similar = similar
        self.http = JSONClient("Wikipedia", base_url, timeout, retry, headers={"User-Agent": user_agent})

    # --- the stateless calls ---------------------------------------------------------
    def run(self, action: str, argument: str) -> str:
        action = self.check_action(action, ("search", "page", "lookup"))
        if action == "lookup":
            raise ValueError("wikipedia lookup needs the episode's last page: call tool.new_episode() per question and send its actions there")
        entity = " ".join(argument.split())
        if action == "page":
            return json.dumps(self.page(entity), ensure_ascii=False)
        return self.new_episode().run("search", entity)

    def page(self, entity: str) -> dict[str, Any]:
        """{"title", "paragraphs"} of the page for `entity`, or {"similar": [titles]}."""
        found = self._extract(entity)
        similar = None
        if found is None:
            similar = self._search_titles(entity)
            match = next((title for title in similar if title.casefold() == entity.casefold()), None)
            found = self._extract(match) if match else None
        if found is None or any("may refer to:" in paragraph for paragraph in found["paragraphs"]):
            return {"similar": similar if similar is not None else self._search_titles(entity)}
        return found

    def _query(self, **params: Any) -> dict[str, Any]:
        result = self.http.get("", {"action": "query", "format": "json", "formatversion": 2, **params})
        if not isinstance(result, dict):
            raise ToolError(f"Wikipedia answered with {type(result).__name__} JSON, not an object")
        if "error" in result:
            error = result["error"]
            raise ToolError(f"Wikipedia API error: {error.get('info', error) if isinstance(error, dict) else error}")
        return result.get("query") or {}

    def _extract(self, title: str) -> dict[str, Any] | None:
        pages = self._query(prop="extracts", explaintext=1, redirects=1, titles=title).get("pages") or []
        page = pages[0] if pages else {}
        paragraphs = clean_extract(page.get("extract") or "")
        if page.get("missing") or page.get("invalid") or not paragraphs:
            return None
        return {"title": page.get("title", title), "paragraphs": paragraphs}

    def _search_titles(self, entity: str) -> list[str]:
        hits = self._query(list="search", srsearch=entity, srlimit=self.similar, srprop="").get("search") or []
        return [hit["title"] for hit in hits if isinstance(hit, dict) and "title" in hit][: self.similar]

    # --- episodes ----------------------------------------------------------------------
    def new_episode(self, calls: Tool | None = None) -> WikipediaEpisode:
        return WikipediaEpisode(self, calls or self)

    def result_config(self) -> dict[str, Any]:
        return {"base_url": self.base_url, "sentences": self.sentences, "similar": self.similar}

    def close(self) -> None:
        self.http.close()


class WikipediaEpisode(Tool):
    """One question's Search/Lookup; fetches pages through `calls` (the tool or its cache)."""

    name = "wikipedia"
    actions = ("search", "lookup")

    def __init__(self, tool: WikipediaTool, calls: Tool) -> None:
        self.tool = tool
        self.calls = calls
        self.page_sentences: list[str] = []
        self.keyword: str | None = None
        self.matches: list[str] = []
        self.next_match = 0

    def run(self, action: str, argument: str) -> str:
        action = self.check_action(action)
        argument = " ".join(argument.split())
        return self.search(argument) if action == "search" else self.lookup(argument)

    def search(self, entity: str) -> str:
        if not entity:
            return EMPTY_QUERY
        page = json.loads(self.calls.run("page", entity))
        self.keyword, self.matches, self.next_match = None, [], 0
        if "similar" in page:
            self.page_sentences = []
            return not_found(entity, page["similar"])
        self.page_sentences = split_sentences(page["paragraphs"])
        return " ".join(self.page_sentences[: self.tool.sentences])

    def lookup(self, keyword: str) -> str:
        if self.keyword is None or keyword.casefold() != self.keyword.casefold():
            self.keyword = keyword
            self.matches = [s for s in self.page_sentences if keyword and keyword.casefold() in s.casefold()]
            self.next_match = 0
        if self.next_match >= len(self.matches):
            return NO_MORE
        self.next_match += 1
        return f"(Result {self.next_match} / {len(self.matches)}) {self.matches[self.next_match - 1]}"

    def new_episode(self, calls: Tool | None = None) -> WikipediaEpisode:
        return WikipediaEpisode(self.tool, calls or self.calls)
