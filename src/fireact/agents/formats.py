"""How an episode becomes a prompt, one function per format.

- `fewshot`: the task's few-shot examples, then the question and the rounds so far as ReAct
  text, ending in "Thought:" (prompted agents, completion style; the paper's prompting).
- `alpaca`: the Alpaca header around the question, then the rounds (agents fine-tuned on the
  Alpaca records, zero-shot).
- `chat`: chat messages, user question, assistant Thought/Action, user Observation (agents
  fine-tuned on chat records, zero-shot).

`thought_prefix` starts the next thought (Reflexion's reflection cue).
"""

from __future__ import annotations

from fireact.llm.base import Prompt
from fireact.trajectory import ALPACA_HEADER, Step, render_step, steps_to_messages


def _history(steps: list[Step]) -> str:
    return "".join(render_step(step) for step in steps)


def fewshot(question: str, steps: list[Step], examples: str, thought_prefix: str = "") -> str:
    return f"{examples}{question}\n{_history(steps)}Thought:{thought_prefix}"


def alpaca(question: str, steps: list[Step], examples: str = "", thought_prefix: str = "") -> str:
    return f"{ALPACA_HEADER.format(question=question)}{_history(steps)}Thought:{thought_prefix}"


def chat(question: str, steps: list[Step], examples: str = "", thought_prefix: str = "") -> list[dict[str, str]]:
    messages = steps_to_messages(question, steps)
    if examples:
        messages.insert(0, {"role": "system", "content": examples.rstrip()})
    if thought_prefix:
        # An assistant turn cannot be prefilled through every chat API, so the cue rides on
        # the last observation.
        messages[-1] = {**messages[-1], "content": messages[-1]["content"] + f"\nThought:{thought_prefix}"}
    return messages


FORMATS = {"fewshot": fewshot, "alpaca": alpaca, "chat": chat}


def render_prompt(fmt: str, question: str, steps: list[Step], examples: str = "", thought_prefix: str = "") -> Prompt:
    if fmt not in FORMATS:
        raise ValueError(f"unknown prompt format {fmt!r}; choose one of {list(FORMATS)}")
    return FORMATS[fmt](question, steps, examples, thought_prefix)
