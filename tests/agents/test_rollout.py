"""The loop's rules, with a scripted LLM (a real implementation of the LLM interface that
answers from a table) and a small in-memory tool: re-asks, format errors, round limits,
reflection cues, invalid actions, backend failures, tool errors."""

import threading
import time

import pytest

from fireact.agents.methods import CoT, IO, ReAct, Reflexion
from fireact.agents.rollout import Rollout
from fireact.evaluate.summary import method_used, summarize
from fireact.llm.base import LLM, Completion, cut_at_stop
from fireact.tasks import HotpotQA
from fireact.tasks.base import Question
from fireact.tools.base import Tool, ToolError


class ScriptedLLM(LLM):
    backend, model = "scripted", "script"

    def __init__(self, reply):
        self.reply, self.calls, self.seeds = reply, [], []

    def generate(self, prompts, stop=(), max_tokens=256, seeds=None):
        self.calls.append(list(prompts))
        self.seeds.append(list(seeds))
        out = []
        for prompt in prompts:
            text = self.reply(prompt)
            if text is None:
                out.append(Completion("", 0, 0, "stop", error="HTTP 500 after 3 retries"))
                continue
            text, _ = cut_at_stop(text, stop)
            out.append(Completion(text, len(str(prompt)) // 4, len(text) // 4, "stop"))
        return out


class DictTool(Tool):
    name = "dict"

    def __init__(self, answers):
        self.answers = answers

    def run(self, action, argument):
        if argument == "boom":
            raise ToolError("search service unavailable")
        return self.answers.get(argument, "No result")


Q1 = Question("1", "Who named Milhouse?", "Richard Nixon")
Q2 = Question("2", "Which is first?", "Arthur's Magazine")


def rollout(reply, method=None, **kw):
    llm = ScriptedLLM(reply)
    return Rollout(llm, method or ReAct(), HotpotQA(), DictTool({"milhouse": "named after Richard Nixon"}), **kw), llm


def test_react_search_then_finish_batched():
    def reply(prompt):
        if "Observation: named after" in prompt:
            return " Found it.\nAction: finish[Richard Nixon]\nObservation: x"
        if prompt.endswith("Which is first?\nThought:"):
            return " I know.\nAction: finish[First for Women]\n"
        return " Search it.\nAction: search[milhouse]\nObservation: hallucinated"

    r, llm = rollout(reply)
    finished = []
    out = r.run([Q1, Q2], on_finish=finished.append)
    assert [t.qid for t in finished] == ["2", "1"]  # written as each finishes
    one, two = out
    assert (one.answer, one.em, one.turns, one.tool_calls) == ("Richard Nixon", 1.0, 2, 1)
    assert one.steps[0].observation == "named after Richard Nixon"
    assert one.steps[1].observation == "Episode finished, reward = True"
    assert (two.answer, two.em, two.f1) == ("First for Women", 0.0, 0.0)
    assert [len(batch) for batch in llm.calls] == [2, 1]  # one batch per round
    assert one.prompt_tokens > 0 and one.method == "react" and one.task == "hotpotqa"


def test_each_sample_of_a_question_has_its_own_seeds_whatever_the_batch():
    def reply(prompt):
        return " Search it.\nAction: search[milhouse]\n" if "Observation" not in prompt else " Done.\nAction: finish[Richard Nixon]\n"

    r, llm = rollout(reply, seed=3)
    together = r.run([Q1, Q1, Q2], samples=[0, 1, 0])
    assert [(t.qid, t.sample) for t in together] == [("1", 0), ("1", 1), ("2", 0)]
    first_round = llm.seeds[0]
    assert len(set(first_round)) == 3  # the two samples of Q1 differ
    alone, _ = rollout(reply, seed=3)
    alone.run([Q1], samples=[1])
    alone = alone.llm
    assert alone.seeds[0] == [first_round[1]]  # (question 1, sample 1) asks with the same seed alone


def test_reply_without_action_is_continued_then_counted_as_finish():
    r, llm = rollout(lambda prompt: "" if prompt.endswith("\nAction:") else " I am not sure what to do.")
    (t,) = r.run([Q1])
    assert len(llm.calls) == 6  # the ask and 5 re-asks
    assert llm.calls[1][0].endswith("Thought: I am not sure what to do.\nAction:")
    assert t.format_errors == 1 and t.steps[-1].is_finish and t.answer == "" and t.em == 0.0


@pytest.mark.parametrize("action", ["I will think more", "search[Martin Sheen movie"])
def test_an_action_the_tool_cannot_run_is_an_invalid_action_and_a_format_error(action):
    r, _ = rollout(lambda p: f" x\nAction: {action}", method=ReAct(max_rounds=2))
    (t,) = r.run([Q1])
    assert t.format_errors == 2 and all(s.observation.startswith(f"Invalid action: {action}.") for s in t.steps)
    assert summarize([t])["format_error_rate"] == 1.0


def test_reask_that_yields_an_action_recovers():
    r, _ = rollout(lambda p: " finish[Richard Nixon]" if p.endswith("\nAction:") else " I know the answer.")
    (t,) = r.run([Q1])
    assert (t.answer, t.format_errors, t.steps[0].thought) == ("Richard Nixon", 0, "I know the answer.")


def test_round_limit_and_invalid_action():
    r, _ = rollout(lambda p: " Look.\nAction: lookup[milhouse]", method=ReAct(max_rounds=3))
    (t,) = r.run([Q1])
    assert t.turns == 3 and t.answer is None and t.em == 0.0 and "within 3 rounds" in t.error and t.format_errors == 3
    assert t.steps[0].observation == "Invalid action: lookup[milhouse]. Valid actions are search[<argument>] and finish[<argument>]."


def test_reflexion_cue_starts_rounds_6_and_10():
    seen = {}

    def reply(prompt):
        seen[prompt.count("Observation: named after")] = prompt[-200:]
        return " Thought: keep going\nAction: search[milhouse]"

    r, _ = rollout(reply, method=Reflexion())
    (t,) = r.run([Q1])
    assert t.turns == 11
    assert seen[5].endswith("Thought: Now that I haven't solved the task within 5 steps, let me do a reflection and think about how to improve my strategy.")
    assert seen[9].endswith("I need to wrap up and finish this task in the next step.")
    assert t.steps[5].thought.startswith("Now that I haven't solved the task within 5 steps") and t.steps[5].thought.endswith("Thought: keep going")
    assert t.steps[4].thought == "Thought: keep going"
    # The one rule that recognises a reflection round knows the rounds this method wrote.
    assert [i for i, step in enumerate(t.steps) if step.is_reflection] == [5, 9]
    assert method_used(t) == "reflexion"


def test_backend_failure_marks_question_failed_and_run_goes_on():
    r, _ = rollout(lambda p: None if "Who named Milhouse" in p else " x\nAction: finish[Arthur's Magazine]")
    one, two = r.run([Q1, Q2])
    assert one.error.startswith("LLM request failed: HTTP 500") and one.em == 0.0 and one.answer is None
    assert two.em == 1.0


def test_tool_error_becomes_the_observation():
    r, _ = rollout(lambda p: " x\nAction: finish[a]" if "Tool error" in p else " x\nAction: search[boom]")
    (t,) = r.run([Q1])
    assert t.steps[0].observation == "Tool error: search service unavailable" and t.answer == "a"


def test_cot_and_io_are_one_round_finishes():
    r, _ = rollout(lambda p: " Milhouse was named after Nixon.\nAnswer: Richard Nixon\n\nQuestion", method=CoT())
    (t,) = r.run([Q1])
    assert (t.turns, t.steps[0].thought, t.answer, t.em, t.method) == (1, "Milhouse was named after Nixon.", "Richard Nixon", 1.0, "cot")
    r, _ = rollout(lambda p: " Richard Nixon\nnext", method=IO())
    (t,) = r.run([Q1])
    assert (t.turns, t.answer, t.em, t.method) == (1, "Richard Nixon", 1.0, "io")


def test_fine_tuned_formats():
    r, llm = rollout(lambda p: " x\nAction: finish[Richard Nixon]", method=ReAct(format="alpaca"))
    r.run([Q1])
    assert llm.calls[0][0].startswith("Below is an instruction") and llm.calls[0][0].endswith("### Response:\nThought:")
    r, llm = rollout(lambda p: "Thought: x\nAction: finish[Richard Nixon]", method=ReAct(format="chat"))
    (t,) = r.run([Q1])
    assert llm.calls[0][0] == [{"role": "user", "content": Q1.question}]  # zero-shot, as a chat agent is trained
    assert t.em == 1.0


class GateTool(DictTool):
    """Question 1's search waits until question 2 has finished: a round barrier would deadlock
    on it (question 2's later rounds would wait for question 1's tool), so it gives up after
    10 s with a tool error the test sees."""

    def __init__(self, answers):
        super().__init__(answers)
        self.released = threading.Event()

    def run(self, action, argument):
        if argument == "slow" and not self.released.wait(10):
            raise ToolError("held by a round barrier")
        return super().run(action, argument)


def test_a_slow_tool_holds_only_its_own_question():
    def reply(prompt):
        if "Who named Milhouse?" in prompt:  # one slow search, then the answer
            return " x\nAction: finish[Richard Nixon]" if "Observation: Nixon" in prompt else " x\nAction: search[slow]"
        searches = prompt.count("Observation: named after")  # three quick searches, then the answer
        return " x\nAction: finish[Arthur's Magazine]" if searches == 3 else " x\nAction: search[milhouse]"

    llm = ScriptedLLM(reply)
    tool = GateTool({"milhouse": "named after Richard Nixon", "slow": "Nixon"})
    finished = []

    def on_finish(trajectory):
        finished.append(trajectory.qid)
        tool.released.set()

    one, two = Rollout(llm, ReAct(), HotpotQA(), tool, gather_s=0.01).run([Q1, Q2], on_finish=on_finish)
    assert finished == ["2", "1"] and two.turns == 4 and two.em == 1.0
    assert one.steps[0].observation == "Nixon" and one.em == 1.0  # not the barrier's tool error
    assert [len(batch) for batch in llm.calls][:4] == [2, 1, 1, 1]  # question 2 went on alone


def test_in_flight_bounds_the_questions_running_at_once_in_order():
    def reply(prompt):
        return " x\nAction: finish[Richard Nixon]" if "Observation: named after" in prompt else " x\nAction: search[milhouse]"

    questions = [Question(str(i), f"Question {i}?", "Richard Nixon") for i in range(5)]
    all_at_once, llm = rollout(reply)
    together = all_at_once.run(questions)
    assert [len(batch) for batch in llm.calls] == [5, 5]
    two_at_a_time, llm = rollout(reply)
    finished = []
    bounded = two_at_a_time.run(questions, on_finish=lambda t: finished.append(t.qid), in_flight=2)
    assert max(len(batch) for batch in llm.calls) == 2 and finished == ["0", "1", "2", "3", "4"]
    strip = lambda t: {k: v for k, v in t.to_dict().items() if k not in ("wall_time", "started_at")}
    assert [strip(t) for t in bounded] == [strip(t) for t in together]


class SleepTool(DictTool):
    """The search for "slow" takes 0.3 s."""

    def run(self, action, argument):
        if argument == "slow":
            time.sleep(0.3)
        return super().run(action, argument)


def test_gather_none_is_the_round_barrier():
    def reply(prompt):
        if "Who named Milhouse?" in prompt:
            return " x\nAction: finish[Richard Nixon]" if "Observation: Nixon" in prompt else " x\nAction: search[slow]"
        searches = prompt.count("Observation: named after")
        return " x\nAction: finish[Arthur's Magazine]" if searches == 3 else " x\nAction: search[milhouse]"

    runs = {}
    for gather_s in (None, 0.01):
        llm = ScriptedLLM(reply)
        tool = SleepTool({"milhouse": "named after Richard Nixon", "slow": "Nixon"})
        finished = []
        trajectories = Rollout(llm, ReAct(), HotpotQA(), tool, gather_s=gather_s).run(
            [Q1, Q2], on_finish=lambda t: finished.append(t.qid))
        runs[gather_s] = [len(batch) for batch in llm.calls], finished, [t.steps for t in trajectories]
    assert runs[None][:2] == ([2, 2, 1, 1], ["1", "2"])  # question 2's round 2 waited for question 1's search
    assert runs[0.01][:2] == ([2, 1, 1, 1, 1], ["2", "1"])
    assert runs[None][2] == runs[0.01][2]  # the same trajectories either way
