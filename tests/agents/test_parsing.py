import pytest

from fireact.agents.parsing import parse_answer, parse_reply


@pytest.mark.parametrize(
    "reply, thought, action, argument",
    [
        (" I need to search X.\nAction: search[X]", "I need to search X.", "search", "X"),
        (" done\nAction: finish[Paris]\nObservation: made up", "done", "finish", "Paris"),
        (" a\nAction: search[q]\nThought: second round\nAction: finish[z]", "a", "search", "q"),
        ("Action: finish[yes]", "", "finish", "yes"),
        (" hmm\nAction: look around", "hmm", "look around", None),
        (" x\nAction: search[nested [brackets]]", "x", "search", "nested [brackets]"),
        (" x\nAction: finish[]", "x", "finish", ""),
    ],
)
def test_parse_reply(reply, thought, action, argument):
    parsed = parse_reply(reply)
    assert (parsed.thought, parsed.action, parsed.argument) == (thought, action, argument)


def test_reply_with_no_action():
    parsed = parse_reply(" I am thinking.\n\nQuestion: next example")
    assert parsed.action is None and parsed.thought == "I am thinking."


def test_chat_reply_starts_with_its_own_thought_field():
    parsed = parse_reply("Thought: go\nAction: search[a b]", prompt_ends_in_thought=False)
    assert (parsed.thought, parsed.action, parsed.argument) == ("go", "search", "a b")


@pytest.mark.parametrize(
    "text, thought, answer",
    [
        ("Thought: it is X. So the answer is X.\nAnswer: X", "it is X. So the answer is X.", "X"),
        ("Thought: no answer line", "Thought: no answer line", None),
        ("Answer: yes\nmore", "", "yes"),
    ],
)
def test_parse_answer(text, thought, answer):
    assert parse_answer(text) == (thought, answer)
