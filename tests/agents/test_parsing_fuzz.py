"""Property-based tests: whatever a model writes, parsing a reply never raises and always
gives a defined step (or "no action", which the rollout re-asks and then counts as a format
error)."""

import os
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fireact.agents.methods import CoT, IO, ReAct, Reflexion
from fireact.agents.parsing import Reply, parse_answer, parse_reply
from fireact.trajectory import Step, parse_action

TOOL_ACTIONS = ("search", "lookup")
PIECES = [
    "Thought:", "Thought: ", "Action:", "Action: ", "Observation:", "Observation: ", "Answer:", "Answer: ",
    "Question:", "\n", "\n\n", " ", "[", "]", "[[", "]]", "search", "finish", "lookup", "Search", "FINISH",
    "search[", "finish[]", "\r\n", "\t", "\u2028", "é", "漢字", "🙂", "\x00",
]
# Model-like text: the format's own markers, brackets and newlines between arbitrary unicode.
replies = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=25).map("".join),
)
# FIREACT_FUZZ_EXAMPLES=5000 searches harder (the default keeps the suite fast).
FUZZ = settings(max_examples=int(os.environ.get("FIREACT_FUZZ_EXAMPLES", "300")), deadline=None)


def classify(step: Step | None) -> str:
    """What the rollout does with a parsed step: finish, a known tool action, an invalid action
    (answered with "Invalid action: ..."), or a format error (no action: re-asked)."""
    if step is None:
        return "format_error"
    if step.is_finish:
        return "finish"
    if step.argument is not None and step.action.lower() in TOOL_ACTIONS:
        return step.action.lower()
    return "invalid"


def assert_reply_is_defined(reply: Reply) -> None:
    assert isinstance(reply, Reply) and isinstance(reply.thought, str)
    assert "\nAction:" not in reply.thought
    if reply.action is None:
        assert reply.argument is None
        return
    assert isinstance(reply.action, str) and reply.action.strip()
    if reply.argument is not None:
        assert isinstance(reply.argument, str) and "\n" not in reply.argument
        assert re.fullmatch(r"\w+", reply.action)
        assert parse_action(f"{reply.action}[{reply.argument}]") == (reply.action, reply.argument)  # writes back as read


@FUZZ
@given(replies, st.booleans())
@example("", True)
@example("Action:", True)
@example(" x\nAction: search[[a]]", True)
@example(" x\nAction: search[a", True)
@example(" x\nAction: search[a]]\nAction: finish[b]", True)
@example("Thought:\nAction:\n", False)
def test_parse_reply_never_raises_and_gives_a_defined_reply(text, prompt_ends_in_thought):
    assert_reply_is_defined(parse_reply(text, prompt_ends_in_thought))


@FUZZ
@given(
    thought=st.text().filter(lambda t: "\nAction:" not in t and not t.lstrip(" ").startswith("Action:")),
    name=st.from_regex(r"\w+", fullmatch=True),
    argument=st.text().filter(lambda a: "\n" not in a),
    rest=replies,
)
def test_the_first_of_several_actions_counts(thought, name, argument, rest):
    parsed = parse_reply(f"{thought}\nAction: {name}[{argument}]\n{rest}")
    assert (parsed.action, parsed.argument) == (name, argument)
    assert parsed.thought == thought.lstrip(" ").strip()


@FUZZ
@given(replies)
@example("Answer:")
@example("Thought: a\nAnswer: b\nAnswer: c")
def test_parse_answer_never_raises(text):
    thought, answer = parse_answer(text)
    assert isinstance(thought, str)
    assert answer is None if "Answer:" not in text else isinstance(answer, str) and "\n" not in answer


METHODS = [ReAct(), ReAct(format="alpaca"), ReAct(format="chat"), Reflexion(), Reflexion(format="chat"), CoT(), IO()]


@FUZZ
@given(replies, st.sampled_from(METHODS), st.integers(min_value=1, max_value=12))
@example("", ReAct(), 1)
@example("Action: finish[]", ReAct(format="chat"), 1)
@example(" Let me think.\nAnswer: \n", CoT(), 1)
def test_every_method_turns_any_reply_into_a_step_or_a_format_error(text, method, round_number):
    step = method.parse(text, round_number)
    assert classify(step) in {"finish", *TOOL_ACTIONS, "invalid", "format_error"}
    if step is not None:
        assert isinstance(step.thought, str) and isinstance(step.action, str)
        assert step.argument is None or isinstance(step.argument, str)
        assert step.observation is None
        if method.name in ("cot", "io"):
            assert step.is_finish  # these answer once: always finish[answer]
