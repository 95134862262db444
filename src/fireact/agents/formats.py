"""How an episode becomes a prompt, one function per format.

- `fewshot`: the task's few-shot examples, then the question and the rounds so far as ReAct
  text, ending in "Thought:" (prompted agents, completion style; the paper's prompting).
- `alpaca`: the Alpaca header around the question, then the rounds (agents fine-tuned on the
  Alpaca records, zero-shot).
- `chat`: chat messages, user question, assistant Thought/Action, user Observation (agents
  fine-tuned on chat records, zero-shot).

`thought_prefix` starts the next thought (Reflexion's reflection cue).

One name, `format`, for train and evaluate alike: `train` writes the format it trained in
(the `format` group, conf/format/) beside the weights it exports, as TRAINED_FORMAT, and `method.format=auto`
(every method config's default) resolves to it for that model (`resolve_format`), so a
fine-tuned agent is evaluated in the format it was trained in without anyone saying so, and a
base model is prompted few-shot.
"""

from __future__ import annotations

import json
from pathlib import Path

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


TRAINED_FORMAT = "fireact_format.json"  # {"format": "alpaca" | "chat"}, in an adapter or model folder train wrote


def write_trained_format(folder: str | Path, fmt: str) -> None:
    (Path(folder) / TRAINED_FORMAT).write_text(json.dumps({"format": fmt}) + "\n")


def trained_format(folder: str | Path | None) -> str | None:
    """The format a folder's weights were fine-tuned in, or None for weights train did not write."""
    record = Path(str(folder)).expanduser() / TRAINED_FORMAT if folder else None
    if record is None or not record.is_file():
        return None
    fmt = json.loads(record.read_text())["format"]
    if fmt not in FORMATS:
        raise ValueError(f"{record}: unknown format {fmt!r}; choose one of {list(FORMATS)}")
    return fmt


def resolve_format(requested: str, model) -> str:
    """`requested` unless it is auto; auto: the format of model.adapter, else of model.path, as
    train recorded it; fewshot for a model train did not write (a base model, a served name)."""
    if requested != "auto":
        return requested
    adapter = model.get("adapter")
    if adapter:
        fmt = trained_format(adapter)
        if fmt is None:
            raise ValueError(f"model.adapter={adapter!r} has no {TRAINED_FORMAT} (an adapter trained elsewhere, or "
                             f"before train recorded formats), so method.format=auto cannot tell its format; "
                             f"set method.format=alpaca or method.format=chat")
        return fmt
    return trained_format(model.get("path")) or "fewshot"
