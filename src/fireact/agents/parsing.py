"""Turn a model reply into a round's thought and action, never raising.

The reply is what the model wrote after the prompt's "Thought:" (or a whole chat reply). The
first Thought/Action pair counts; whatever the model wrote after its first action (a
hallucinated observation, a second round) is dropped, as the stop string would have done.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from fireact.trajectory import parse_action

_ACTION = "\nAction:"


@dataclass
class Reply:
    thought: str
    action: str | None  # None: the reply holds no "Action:" line
    argument: str | None = None


def parse_reply(text: str, prompt_ends_in_thought: bool = True) -> Reply:
    body = text if prompt_ends_in_thought else _strip_field(text.lstrip(), "Thought:")
    body = body.lstrip(" ")
    if body.startswith("Action:"):  # an action with no thought
        thought, action_text = "", body
    else:
        thought, found, rest = body.partition(_ACTION)
        if not found:
            return Reply(thought=_first_paragraph(thought), action=None)
        action_text = "Action:" + rest
    action_line = _strip_field(action_text, "Action:").split("\n", 1)[0]
    if not action_line.strip():
        return Reply(thought=thought.strip(), action=None)
    action, argument = parse_action(action_line)
    return Reply(thought=thought.strip(), action=action, argument=argument)


def _strip_field(text: str, field: str) -> str:
    return text[len(field):] if text.startswith(field) else text


def _first_paragraph(text: str) -> str:
    return text.strip().split("\n\n", 1)[0].split("\nObservation:", 1)[0].strip()


def parse_answer(text: str) -> tuple[str, str | None]:
    """IO/CoT replies: (thought, answer) from "...\\nAnswer: X"; answer None if absent."""
    thought, found, answer = text.partition("Answer:")
    if not found:
        return text.strip(), None
    return thought.strip().removeprefix("Thought:").strip(), answer.strip().split("\n", 1)[0].strip()


_SEARCH_R1_ACTION = re.compile(r"<(search|answer)>(.*?)</\1>", re.DOTALL)
_THINK_TAG = re.compile(r"</?think>")


def parse_search_r1(reply: str) -> Reply:
    """A Search-R1 reply, through the stop string that ended it (`</search>`, `</answer>`), read as
    Search-R1 reads it (search_r1/llm_agent/generation.py, postprocess_predictions): the first
    `<search>...</search>` or `<answer>...</answer>` is the action, its content stripped; neither:
    no action. The thought is the text before it, think tags removed."""
    match = _SEARCH_R1_ACTION.search(reply)
    if match is None:
        return Reply(thought=reply.strip(), action=None)
    thought = _THINK_TAG.sub("", reply[: match.start()]).strip()
    return Reply(thought, "finish" if match.group(1) == "answer" else "search", match.group(2).strip())
