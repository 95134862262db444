"""method=search_r1 and format=search_r1: Search-R1's prompt and tags, read as Search-R1's code
reads them, `<information>` never trained on, and the released ReAct trajectories rendered in it."""

import json
import re

import pytest

from fireact.agents.methods import ReAct, SearchR1
from fireact.agents.parsing import parse_search_r1
from fireact.agents.rollout import Rollout
from fireact.formats import SEARCH_R1_INSTRUCTION, SEARCH_R1_INVALID, SearchR1 as SearchR1Format
from fireact.llm.base import cut_at_stop
from fireact.paths import data_dir
from fireact.tasks import HotpotQA
from fireact.train.examples import IGNORE_INDEX, build_example, sampled_example
from fireact.trajectory_files import read_trajectory_file

from tests.agents.test_rollout import DictTool, ScriptedLLM
from tests.agents.test_token_rollout import QUESTION, TokenPolicy, spans, tokenizer  # noqa: F401  (a fixture)


def search_r1_reading(response: str) -> tuple[str | None, str]:
    """Search-R1's own reading of a whole response, restated from search_r1/llm_agent/generation.py
    (a14dc3a): `_postprocess_responses` cuts it after the first </search>, else after the first
    </answer>; `postprocess_predictions` takes the first <search>/<answer> pair, content stripped."""
    if "</search>" in response:
        response = response.split("</search>")[0] + "</search>"
    elif "</answer>" in response:
        response = response.split("</answer>")[0] + "</answer>"
    match = re.search(r"<(search|answer)>(.*?)</\1>", response, re.DOTALL)
    return (match.group(1), match.group(2).strip()) if match else (None, "")


RESPONSES = [
    "<think> I need the creator. </think>\n<search> Francine voice Wendy Schaal </search>",
    "<think>done</think>\n<answer> Seth MacFarlane </answer>",
    "<answer>  two\nlines  </answer> and then <search> more </search>",  # </search> cuts; the answer is first
    "<search> first </search><search> second </search>",
    "no tags at all, just words",
    "<think> unclosed think <search>q</search>",
    "<answer> mismatched </search>",  # the pair must match: invalid
    "<search></search>",
    "<search> ran out of tokens",  # no closing tag: invalid, as in Search-R1
    "<think> a </think> <answer>Beijing</answer> trailing words",
]


@pytest.mark.parametrize("response", RESPONSES)
def test_a_reply_cut_at_the_stop_strings_reads_as_search_r1_reads_the_whole_response(response):
    """The backend returns the reply cut before the first stop string (</search> or </answer>);
    read that way it is the action Search-R1's code finds in the whole response."""
    text, stop = cut_at_stop(response, SearchR1().stop)
    parsed = parse_search_r1(text + (stop or ""))
    action, content = search_r1_reading(response)
    assert ({"search": "search", "answer": "finish", None: None}[action], content or None) == \
        (parsed.action, parsed.argument or None)


def test_the_thought_is_the_text_before_the_action_without_think_tags():
    parsed = parse_search_r1("<think> I need the creator. </think>\n<search> Wendy Schaal </search>")
    assert (parsed.thought, parsed.action, parsed.argument) == ("I need the creator.", "search", "Wendy Schaal")


def test_the_prompt_is_search_r1s_instruction_and_question_as_its_data_writes_it():
    [message] = SearchR1Format().prompt("  who wrote it ", [])
    assert message == {"role": "user", "content": SEARCH_R1_INSTRUCTION.format(question="who wrote it?")}
    assert message["content"].startswith("Answer the given question. You must conduct reasoning inside <think>")
    assert message["content"].endswith("For example, <answer> Beijing </answer>. Question: who wrote it?\n")


def test_a_rollout_continues_one_assistant_turn_and_trains_on_the_sampled_ids_only(tokenizer):  # noqa: F811
    """A search, a reply with neither tag (Search-R1's message, a format error, no re-ask), then the
    answer: one assistant turn, every harness piece (information, message) masked. The end of turn
    that ended the tagless reply is not continued after (Search-R1 decodes replies without it)."""
    replies = ["<think> Who named him? </think>\n<search> milhouse </search>",
               "I will just say it.",
               "<think> Nixon. </think>\n<answer> Richard Nixon </answer>"]
    policy = TokenPolicy(tokenizer, [replies[0], replies[1] + "<|im_end|>", replies[2] + "<|im_end|>"])
    tool = DictTool({"milhouse": "Doc 1(Title: Milhouse) named after Richard Nixon"})
    [trajectory] = Rollout(policy, SearchR1(), HotpotQA(), tool).run([QUESTION])
    assert [s.action for s in trajectory.steps] == ["search", "I will just say it.", "finish"]
    assert trajectory.answer == "Richard Nixon" and trajectory.em == 1.0 and trajectory.format_errors == 1
    trace = trajectory.tokens
    text = policy.decode(trace.ids)
    head = tokenizer.apply_chat_template(SearchR1Format().prompt(QUESTION.question, []), add_generation_prompt=True,
                                         tokenize=False)
    assert text == (head + replies[0] + "\n\n<information>Doc 1(Title: Milhouse) named after Richard Nixon"
                    "</information>\n\n" + replies[1] + SEARCH_R1_INVALID + replies[2])
    assert spans(policy, trace) == replies  # the closing tags and the end of turn the policy wrote are its own
    example = sampled_example(trace, None)
    trained = tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])
    assert "information" not in trained and "previous action" not in trained and "Answer the given" not in trained


def test_a_released_react_trajectory_renders_in_search_r1_tags_with_information_masked(tokenizer):  # noqa: F811
    trajectories, _ = read_trajectory_file(data_dir() / "finetune/alpaca_format/hotpotqa.json")
    first = trajectories[0]
    segments = SearchR1Format().segments(first, tokenizer)
    example = build_example(segments, train_on_observations=False, max_length=None)
    text = tokenizer.decode(example.input_ids)
    assert "<|im_start|>user\nAnswer the given question." in text and text.endswith("</answer>")
    assert f"<search> {first.steps[0].argument} </search>\n\n<information>" in text
    trained = tokenizer.decode([i for i, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])
    observation = first.steps[0].observation.strip()
    assert observation[:40] in text and observation[:40] not in trained
    assert trained.startswith(f"<think> {first.steps[0].thought} </think>")
    record = SearchR1Format().record(first)
    assert [m["role"] for m in record["messages"]] == ["user", "assistant"]
    json.dumps(record)


def test_search_r1_refuses_a_text_backend_a_tool_without_search_and_other_formats():
    with pytest.raises(ValueError, match="backend=hf"):
        SearchR1().check(ScriptedLLM(lambda prompt: ""), DictTool({}))
    lookup_only = DictTool({})
    lookup_only.actions = ("lookup",)
    with pytest.raises(ValueError, match="tool=retriever"):
        SearchR1().check(ScriptedLLM(lambda prompt: ""), lookup_only)
    with pytest.raises(ValueError, match="method.format=search_r1"):
        SearchR1(format="alpaca")
    with pytest.raises(ValueError, match="not 'search_r1'"):
        ReAct(format="search_r1")
