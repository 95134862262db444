"""Every method's trajectory becomes unified ReAct steps; the method label stays."""

import pytest

from fireact.data.convert import to_react
from fireact.trajectory import Step, Trajectory, parse_react_text


def trajectory(method, steps, answer=None):
    return Trajectory(task="hotpotqa", qid="7", question="Who?", gold="Ann", method=method, steps=steps, answer=answer)


REACT_TEXT = (
    "Thought: I should search.\nAction: search[who]\nObservation: Ann did it.\n"
    "Thought: It is Ann.\nAction: finish[Ann]\nObservation: Episode finished, reward = True\n"
)


def test_react_and_reflexion_keep_their_steps():
    react = trajectory("react", parse_react_text(REACT_TEXT))
    assert to_react(react).react_text() == REACT_TEXT
    reflective = parse_react_text(
        "Thought: Now that I haven't solved the task within 5 steps, let me do a reflection. Thought: try Ann.\n"
        "Action: finish[Ann]\n"
    )
    converted = to_react(trajectory("reflexion", reflective))
    assert converted.method == "reflexion" and converted.steps == reflective and converted.answer == "Ann"


def test_cot_rollout_text_becomes_one_round_that_finishes():
    steps = [Step(thought="Ann wrote it in 1990, so the answer is Ann.\nAnswer: Ann")]
    converted = to_react(trajectory("cot", steps))
    assert converted.method == "cot"
    assert converted.react_text() == "Thought: Ann wrote it in 1990, so the answer is Ann.\nAction: finish[Ann]\n"
    assert converted.answer == "Ann" and converted.tool_calls == 0


def test_cot_answer_field_wins_over_the_written_answer_line_and_raw_prefix_is_dropped():
    steps = [Step(thought="Thought: It was Ann.\nAnswer: ann (probably)")]
    converted = to_react(trajectory("cot", steps, answer="Ann"))
    assert converted.steps == [Step(thought="It was Ann.", action="finish", argument="Ann")]


def test_cot_with_the_answer_only_in_the_field():
    converted = to_react(trajectory("cot", [Step(thought="It was Ann.")], answer="Ann"))
    assert converted.react_text() == "Thought: It was Ann.\nAction: finish[Ann]\n"


def test_cot_already_in_react_form_is_unchanged():
    steps = [Step(thought="It was Ann.", action="finish", argument="Ann", observation="Episode finished, reward = 1")]
    assert to_react(trajectory("cot", steps)).steps == steps


def test_io_becomes_a_finish_with_no_thought():
    assert to_react(trajectory("io", [], answer="Ann")).react_text() == "Action: finish[Ann]\n"
    assert to_react(trajectory("io", [Step(thought="Answer: Ann")])).steps == [Step(action="finish", argument="Ann")]


def test_conversion_copies_and_leaves_the_input_alone():
    original = trajectory("cot", [Step(thought="It was Ann.\nAnswer: Ann")])
    original.meta = {"sets": ["a"]}
    converted = to_react(original)
    converted.meta["sets"].append("b")
    assert original.steps == [Step(thought="It was Ann.\nAnswer: Ann")] and original.meta == {"sets": ["a"]}


def test_bad_input_names_the_trajectory_and_the_fix():
    with pytest.raises(ValueError, match=r"hotpotqa/7 has no answer.*Answer: X"):
        to_react(trajectory("cot", [Step(thought="I am not sure.")]))
    with pytest.raises(ValueError, match=r"unknown method 'tot'"):
        to_react(trajectory("tot", []))
    with pytest.raises(ValueError, match=r"react trajectory hotpotqa/7 has no steps"):
        to_react(trajectory("react", []))
