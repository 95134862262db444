"""Google through SerpAPI: the live search tool the released trajectories were recorded with.

search[query] -> the first of answer_box.answer, answer_box.snippet,
answer_box.snippet_highlighted_words[0], organic_results[0].snippet that Google gave, else
"None" (FireAct's observation for no answer). The key comes from SERPAPI_API_KEY and never
appears in errors, logs or observations.
"""

from __future__ import annotations

import os
from typing import Any

from fireact.tools.base import EMPTY_QUERY, NO_RESULT, Tool, ToolError
from fireact.tools.http import JSONClient, Retry

KEY_VARIABLE = "SERPAPI_API_KEY"


def _first(items: Any) -> Any:
    return items[0] if isinstance(items, list) and items else None


def extract_answer(result: Any) -> str:
    """The observation FireAct took from a SerpAPI Google result."""
    if not isinstance(result, dict):
        raise ToolError(f"SerpAPI answered with {type(result).__name__} JSON, not an object")
    box = result.get("answer_box")
    box = box if isinstance(box, dict) else {}
    candidates = [box.get("answer"), box.get("snippet"), _first(box.get("snippet_highlighted_words"))]
    organic = _first(result.get("organic_results"))
    if isinstance(organic, dict):
        candidates.append(organic.get("snippet"))
    return next((str(text).strip() for text in candidates if text and str(text).strip()), NO_RESULT)


class SerpAPISearch(Tool):
    name = "serpapi"
    actions = ("search",)
    speed_settings = ("timeout", "retry")

    def __init__(
        self,
        base_url: str = "https://serpapi.com",
        engine: str = "google",
        google_domain: str = "google.com",
        gl: str = "us",
        hl: str = "en",
        timeout: float = 20.0,
        retry: Retry | None = None,
    ) -> None:
        api_key = os.environ.get(KEY_VARIABLE, "").strip()
        if not api_key:
            raise ValueError(
                f"the serpapi tool needs a SerpAPI key in the environment variable {KEY_VARIABLE}; "
                "export it, or use tool=recorded_search to replay the recorded Google results offline"
            )
        self.params = {"engine": engine, "google_domain": google_domain, "gl": gl, "hl": hl}
        self.base_url = base_url
        self._api_key = api_key
        self.http = JSONClient("SerpAPI", base_url, timeout, retry, secrets=[api_key])

    def run(self, action: str, argument: str) -> str:
        self.check_action(action)
        query = " ".join(argument.split())
        if not query:
            return EMPTY_QUERY
        result = self.http.get("/search", {**self.params, "q": query, "api_key": self._api_key})
        return self.http.redact(extract_answer(result))

    def result_config(self) -> dict[str, Any]:
        return {"base_url": self.base_url, **self.params}

    def close(self) -> None:
        self.http.close()
