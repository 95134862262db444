"""The four agent methods, each a `method=` config: what a round's prompt ends with, where
generation stops, how a reply becomes a step, and how many rounds there are.

- react: rounds of Thought / Action / Observation, at most 11 (the released code's limit).
- reflexion: ReAct plus a reflection cue that starts the thought of rounds 6 and 10, in the
  words of the released Reflexion trajectories.
- cot: one round, "Thought: ... Answer: X", recorded as a ReAct finish step.
- io: one round, "Answer: X", recorded as a finish step with no thought.
- search_r1: Search-R1's protocol (fireact.formats.SearchR1): `<think>`, `<search>`,
  `<information>` and `<answer>` in one assistant turn, at most 4 searches and a last reply.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from fireact.agents.parsing import parse_answer, parse_reply, parse_search_r1
from fireact.formats import SEARCH_R1_INVALID, SearchR1 as SearchR1Format, get_format
from fireact.llm.base import LLM, Prompt
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
    formats: ClassVar[tuple[str, ...]] = ("fewshot", "alpaca", "chat")  # the formats it prompts in
    format: str = "fewshot"
    max_rounds: int = 11
    max_retries: int = 5  # re-asks of a reply with no action, before it counts as finish[]
    max_tokens: int = 256
    # The stop string is the agent's (it closes the agent's tag): `parse` reads the reply through it,
    # and the trace keeps it. Otherwise it is the harness's cue, and the reply ends before it.
    keeps_stop: ClassVar[bool] = False

    def __post_init__(self):
        if self.format not in self.formats:
            raise ValueError(f"method {self.name} prompts in format {' or '.join(self.formats)}, not "
                             f"{self.format!r}; set method.format={self.formats[0]} (auto, which evaluate and "
                             f"generate resolve from the model, gives the format a fine-tuned model was trained in)")
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

    def check(self, llm: LLM, tool) -> None:
        """Raise ValueError if this method cannot run with `llm` and `tool`; called before any work."""

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

    def invalid_action(self, step: Step, actions: tuple[str, ...]) -> str:
        """The observation for an action the tool cannot run (it counts as a format error)."""
        calls = " and ".join(f"{a}[<argument>]" for a in (*actions, "finish"))
        return f"Invalid action: {step.action_text}. Valid actions are {calls}."

    def harness_text(self, step: Step) -> str | None:
        """The text the harness puts after the reply that made `step`, up to the next ask; None:
        whatever the next round's prompt has there (the rollout renders it, Rollout._harness_text)."""
        return None


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
    formats: ClassVar[tuple[str, ...]] = ("fewshot",)
    max_rounds: int = 1
    retry_cue: ClassVar[str] = "\nAnswer:"
    tail: ClassVar[str] = "\nThought:"

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


@dataclass
class SearchR1(Method):
    """Search-R1's protocol, as its evaluation runs it (scripts/nq_hotpotqa/evaluate.sh): up to 4
    searches (`max_turns`) and one last reply, 500 tokens a reply (`max_response_length`); pair
    it with tool=retriever for its retriever's passages (top 3). Every reply is a step: one with
    neither tag is an invalid step, answered with Search-R1's message and counted as a format
    error, never re-asked. The stop strings end a reply at its first closing tag, where Search-R1
    cuts it, and the reply is read through that tag (`keeps_stop`): the backend says which it was
    (Completion.stop)."""

    name: ClassVar[str] = "search_r1"
    formats: ClassVar[tuple[str, ...]] = ("search_r1",)
    format: str = "search_r1"
    max_rounds: int = 5
    max_retries: int = 0
    max_tokens: int = 500
    keeps_stop: ClassVar[bool] = True

    @property
    def stop(self):
        return ["</search>", "</answer>"]

    def check(self, llm, tool):
        if "search" not in tool.actions:
            raise ValueError(f"method=search_r1 searches, and tool={tool.name} has no search action (it has "
                             f"{list(tool.actions)}); use tool=retriever")
        if not llm.samples_tokens:
            raise ValueError(f"method=search_r1 continues one assistant turn after each search, which backend "
                             f"{llm.backend} cannot be prompted with (it takes text or chat messages); use backend=hf, "
                             f"backend=vllm, or a vLLM server with backend.token_ids=true")

    def render(self, question, steps, examples, round_number):
        return get_format(self.format).prompt(question, steps)

    def parse(self, reply, round_number):
        parsed = parse_search_r1(reply)
        if parsed.action is None:
            return Step("", reply, None)  # invalid: the raw reply, as Step keeps an action it cannot read
        return Step(parsed.thought, parsed.action, parsed.argument)

    def invalid_action(self, step, actions):
        return SEARCH_R1_INVALID

    def harness_text(self, step):
        """The information block after a search, the invalid-action message after any other reply."""
        return SearchR1Format().observation_text(step)
