"""What a rollout records of each model and tool call of an episode (fireact.agents.rollout), for
its trace (fireact.tracking.traces): beside the schema, so that tracking reads them without
importing the agents."""

from __future__ import annotations

from dataclasses import dataclass

from fireact.llm.base import Prompt


@dataclass
class ModelCall:
    """One request to the model, as the trace shows it."""

    round: int
    attempt: int  # 0: the round's first ask; 1, 2, ...: re-asks of a reply that held no action
    prompt: Prompt
    text: str
    prompt_tokens: int
    completion_tokens: int
    start_ns: int  # wall-clock (time.time_ns) bounds of the request: submitted, and its completion back
    end_ns: int
    error: str | None = None


@dataclass
class ToolCall:
    """One call of the tool, as the trace shows it."""

    round: int
    action: str
    argument: str
    observation: str  # what the agent saw
    start_ns: int
    end_ns: int
    tool_observation: str | None = None  # what the tool returned, when the noise replaced it
    error: bool = False
