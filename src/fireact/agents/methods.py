"""The four agent methods, each a `method=` config: what a round's prompt ends with, where
generation stops, how a reply becomes a step, and how many rounds there are.

- react: rounds of Thought / Action / Observation, at most 11 (the released code's limit).
- reflexion: ReAct plus a reflection cue that starts the thought of rounds 6 and 10, in the
  words of the released Reflexion trajectories.
- cot: one round, "Thought: ... Answer: X", recorded as a ReAct finish step.
- io: one round, "Answer: X", recorded as a finish step with no thought.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from fireact.agents.parsing import parse_answer, parse_reply
from fireact.formats import FORMATS, get_format
from fireact.llm.base import Prompt
from fireact.trajectory import REFLECTION_MARKER, Step

# The released Reflexion trajectories' words; each starts with REFLECTION_MARKER, which is how
# a reflection round is recognised everywhere (Step.is_reflection).
REFLECTIONS = {
    6: f" {REFLECTION_MARKER} 5 steps, let me do a reflection and think about how to improve my strategy.",
    10: f" {REFLECTION_MARKER} 9 steps, I need to wrap up and finish this task in the next step.",
}


@dataclass
class Method:
    """`format` is fewshot (prompted) or alpaca/chat (fine-tuned, zero-shot); see fireact.formats.
    `auto` (the configs' default) is resolved from the model before the method is built
    (fireact.formats.resolve_format): fewshot for a base model, the trained format for a fine-tuned one.

    The method owns the whole prompt: `prompter(task)` gives each round's prompt, `reask` and
    `joined` continue a reply that held no action."""

    name: ClassVar[str]
    format: str = "fewshot"
    max_rounds: int = 11
    max_retries: int = 5  # re-asks of a reply with no action, before it counts as finish[]
    max_tokens: int = 256

    def __post_init__(self):
        if self.format not in FORMATS:
            raise ValueError(f"method {self.name}: unknown format {self.format!r}; choose one of {list(FORMATS)} "
                             f"(or auto, which evaluate and generate resolve from the model)")
        # Settings under which no trajectory could reach an answer: refused before any work.
        for key, value, least, hint in (
            ("max_rounds", self.max_rounds, 1, "the paper allows 11"),
            ("max_tokens", self.max_tokens, 1, "the paper's ReAct replies take up to 256"),
            ("max_retries", self.max_retries, 0, "0 counts a reply with no action as finish[] at once"),
        ):
            if not isinstance(value, int) or value < least:
                raise ValueError(f"method.{key}={value!r}: must be an integer >= {least}; set method.{key} ({hint})")

    @property
    def stop(self) -> list[str]:
        return ["\nObservation:"]

    def examples(self, task) -> str:
        """The few-shot examples this method prompts `task` with: the task's for this method
        (Task.prompt), none in a zero-shot format (alpaca, chat: trained without them). The one
        place that decides."""
        return "" if get_format(self.format).zero_shot else task.prompt(self.name)

    def prompter(self, task) -> Callable[[str, list[Step], int], Prompt]:
        """prompt(question, steps, round_number) for `task`'s questions: the examples read once, the
        question posed as the examples pose it (few-shot only), then the method's rendering."""
        examples = self.examples(task)
        pose = task.fewshot_question if self.format == "fewshot" else (lambda question: question)
        return lambda question, steps, round_number: self.render(pose(question), steps, examples, round_number)

    def render(self, question: str, steps: list[Step], examples: str, round_number: int) -> Prompt:
        raise NotImplementedError

    def parse(self, reply: str, round_number: int) -> Step | None:
        """The round's step, or None when the reply holds no action (it is then re-asked)."""
        raise NotImplementedError

    # A re-ask continues the prompt with the reply so far and this cue (text formats only).
    retry_cue: ClassVar[str] = "\nAction:"

    def reask(self, prompt: Prompt, reply: str) -> Prompt:
        """The prompt that re-asks a reply with no action: a text prompt continued with the reply
        and the cue; a chat prompt is sent again as it was."""
        return prompt + reply.rstrip() + self.retry_cue if isinstance(prompt, str) else prompt

    def joined(self, reply: str, text: str) -> str:
        """The reply so far with a re-ask's completion after the cue (what `parse` then reads)."""
        return reply.rstrip() + self.retry_cue + text if reply else text


@dataclass
class ReAct(Method):
    name: ClassVar[str] = "react"

    def thought_prefix(self, round_number: int) -> str:
        return ""

    def render(self, question, steps, examples, round_number):
        return get_format(self.format).prompt(question, steps, examples, self.thought_prefix(round_number))

    def parse(self, reply, round_number):
        prefix = self.thought_prefix(round_number)
        if self.format == "chat":  # the cue rode on the observation; the reply starts afresh
            parsed = parse_reply(reply, prompt_ends_in_thought=False)
            parsed.thought = f"{prefix.strip()} {parsed.thought}".strip()
        else:  # the prompt ended in "Thought:" + cue, which the reply continues
            parsed = parse_reply(prefix + reply)
        if parsed.action is None:
            return None
        return Step(parsed.thought, parsed.action, parsed.argument)


@dataclass
class Reflexion(ReAct):
    name: ClassVar[str] = "reflexion"
    reflections: dict[int, str] = field(default_factory=lambda: dict(REFLECTIONS))

    def thought_prefix(self, round_number):
        return self.reflections.get(round_number, "")


@dataclass
class CoT(Method):
    """Prompted only (few-shot): a fine-tuned agent answers in the ReAct format."""

    name: ClassVar[str] = "cot"
    max_rounds: int = 1
    retry_cue: ClassVar[str] = "\nAnswer:"
    tail: ClassVar[str] = "\nThought:"

    def __post_init__(self):
        super().__post_init__()
        if self.format != "fewshot":
            raise ValueError(f"method {self.name} is few-shot prompting only; set method.format=fewshot")

    @property
    def stop(self):
        return ["\n\n"]

    def render(self, question, steps, examples, round_number):
        return f"{examples}{question}{self.tail}"

    def parse(self, reply, round_number):
        thought, answer = parse_answer(self.tail.strip() + reply)
        return None if answer is None else Step(thought, "finish", answer)


@dataclass
class IO(CoT):
    name: ClassVar[str] = "io"
    retry_cue: ClassVar[str] = ""
    tail: ClassVar[str] = "\nAnswer:"

    @property
    def stop(self):
        return ["\n"]

    def parse(self, reply, round_number):
        answer = reply.strip()
        return Step("", "finish", answer) if answer else None
