"""Property-based tests of the ReAct text parser and the JSONL reader over arbitrary text:
parse_react_text gives defined steps or a ValueError (nothing else), reading its own output
back gives the same steps, and a trajectory file with any torn or corrupt line still reads."""

import json
import os
import re

from hypothesis import example, given, settings
from hypothesis import strategies as st

from fireact.trajectory import Step, Trajectory, parse_action, parse_react_text, render_step

from fireact.trajectory_files import append_jsonl, read_jsonl

PIECES = [
    "Thought:", "Thought: ", "Action:", "Action: ", "Observation:", "Observation: ", "\n", "\n\n", " ",
    "[", "]", "[[", "]]", "search[", "finish[", "lookup", "\r\n", "\u2028", "é", "漢字", "🙂", "\x00",
]
texts = st.one_of(
    st.text(),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=25).map("".join),
)
# FIREACT_FUZZ_EXAMPLES=5000 searches harder (the default keeps the suite fast).
FUZZ = settings(max_examples=int(os.environ.get("FIREACT_FUZZ_EXAMPLES", "300")), deadline=None)


def assert_defined(step: Step) -> None:
    assert isinstance(step.thought, str) and isinstance(step.action, str)
    assert step.argument is None or isinstance(step.argument, str)
    assert step.observation is None or isinstance(step.observation, str)
    if step.argument is not None:
        assert step.action and parse_action(step.action_text) == (step.action, step.argument)


@FUZZ
@given(texts)
@example("")
@example("\n")
@example("Thought:")
@example("Action: search[[x]]\nAction: finish[y]\nAction: z[")
@example("Observation: a\nObservation: b\n\n")
def test_parse_react_text_gives_steps_or_a_value_error(text):
    try:
        steps = parse_react_text(text)
    except ValueError:
        return
    assert steps and all(isinstance(step, Step) for step in steps)
    for step in steps:
        assert_defined(step)
    # The steps written back as ReAct lines read back as the same steps.
    assert parse_react_text("".join(render_step(step) for step in steps)) == steps


@FUZZ
@given(texts)
def test_parse_action_gives_a_name_and_argument_or_the_text(text):
    action, argument = parse_action(text)
    assert isinstance(action, str)
    if argument is None:
        assert action == text.strip()
    else:
        assert re.fullmatch(r"\w+", action)
        assert parse_action(f"{action}[{argument}]") == (action, argument)


def trajectory(qid: str, text: str) -> Trajectory:
    return Trajectory(task="hotpotqa", qid=qid, question=text, gold=text, steps=[Step(text, "search", text, text)])


@FUZZ
@given(st.lists(st.text(max_size=30), min_size=1, max_size=4), st.binary(max_size=40), st.data())
@example(["Zürich é"], b"", None)
def test_a_file_with_a_torn_or_corrupt_line_still_reads(tmp_path_factory, texts_, junk, data):
    """Records appended, then the file cut anywhere (a kill mid-write, also inside a multi-byte
    character) and junk appended: every whole record before the cut reads, the rest is reported."""
    path = tmp_path_factory.mktemp("jsonl") / "t.jsonl"
    for i, text in enumerate(texts_):
        append_jsonl(path, trajectory(str(i), text))
    raw = path.read_bytes()
    cut = len(raw) - 3 if data is None else data.draw(st.integers(min_value=0, max_value=len(raw)))
    path.write_bytes(raw[:cut] + junk)
    read, report = read_jsonl(path)
    whole = raw[:cut].count(b"\n")
    assert [t.qid for t in read][:whole] == [str(i) for i in range(whole)]
    assert [t.question for t in read][:whole] == texts_[:whole]
    assert all(isinstance(key, str) and isinstance(reason, str) for key, reason in report.failures)


@FUZZ
@given(st.lists(st.one_of(st.text(), st.from_type(type(None)), st.integers(), st.lists(st.integers(), max_size=3),
                          st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)), max_size=5))
def test_any_json_line_is_read_or_reported(tmp_path_factory, values):
    path = tmp_path_factory.mktemp("jsonl") / "t.jsonl"
    path.write_text("".join(json.dumps(value) + "\n" for value in values), encoding="utf-8")
    read, report = read_jsonl(path)
    assert len(read) + len(report.failures) == len(values)


def test_a_line_torn_inside_a_multibyte_character_is_one_bad_line(tmp_path):
    """Bug found here: the reader decoded the file as a whole, so such a line stopped the read
    (UnicodeDecodeError) and a killed run could not resume."""
    path = tmp_path / "t.jsonl"
    append_jsonl(path, trajectory("0", "Zürich"))
    append_jsonl(path, trajectory("1", "Zürich"))
    raw = path.read_bytes()
    path.write_bytes(raw[: raw.rindex("ü".encode()) + 1])  # the first byte of "ü" only
    read, report = read_jsonl(path)
    assert [t.qid for t in read] == ["0"]
    assert [(key, reason.split(" (")[0]) for key, reason in report.failures] == [("line 2", "not UTF-8 text")]
