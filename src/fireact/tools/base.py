"""The one interface every tool implements: an action with an argument in, an observation out.

Per-question state: the agent calls `tool.new_episode()` once per question and sends that
question's actions to what it returns. Stateless tools (the searches) return themselves;
Wikipedia returns a fresh episode holding the page that Lookup reads, sharing the tool's
HTTP client and cache. One tool instance may serve many episodes in many threads.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

# What FireAct's SerpAPI wrapper returned when Google had no answer; the released data
# records it 219 times, so a search that finds nothing says the same.
NO_RESULT = "None"
EMPTY_QUERY = "Empty query: write the query inside the brackets, e.g. search[Eiffel Tower height]."


class ToolError(RuntimeError):
    """A tool call failed after its retries; the agent records the message as the observation."""


class Tool(ABC):
    """Subclasses set `name` and `actions` (the action names the agent may call, lower-case)."""

    name: str
    actions: tuple[str, ...] = ("search",)
    # Settings (keys of the tool's config) that change a run's speed or transport, never an
    # observation: a run folder resumes under other values of them.
    speed_settings: tuple[str, ...] = ()

    @abstractmethod
    def run(self, action: str, argument: str) -> str:
        """The observation for `action[argument]`; raises ToolError when the call fails."""

    def new_episode(self, calls: Tool | None = None) -> Tool:
        """The tool one question's episode talks to.

        `calls` is the tool the episode sends its stateless calls through (a cache wrapped
        around this tool); it defaults to this tool. Stateless tools just return it.
        """
        return calls or self

    def result_config(self) -> dict[str, Any]:
        """The settings that change what the tool returns (never secrets); caches key on them."""
        return {}

    def check_action(self, action: str, allowed: tuple[str, ...] | None = None) -> str:
        """The action in lower case; ToolError naming the offered actions if it is not one."""
        allowed = self.actions if allowed is None else allowed
        if action.lower() not in allowed:
            offered = ", ".join(f"{name}[...]" for name in allowed)
            raise ToolError(f"Unknown action {action!r}: the {self.name} tool offers {offered}.")
        return action.lower()

    def close(self) -> None:
        """Release clients and files."""
