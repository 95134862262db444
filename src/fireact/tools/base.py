"""The one interface every tool implements: an action with an argument in, an observation out."""

from __future__ import annotations

from abc import ABC, abstractmethod


class ToolError(RuntimeError):
    """A tool call failed after its retries; the agent records the message as the observation."""


class Tool(ABC):
    """Subclasses set `name` and `actions` (the action names the agent may call, lower-case)."""

    name: str
    actions: tuple[str, ...] = ("search",)

    @abstractmethod
    def run(self, action: str, argument: str) -> str:
        """The observation for `action[argument]`; raises ToolError when the call fails."""

    def close(self) -> None:
        """Release clients and files."""
