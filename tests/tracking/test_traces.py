"""Trajectories as MLflow traces (fireact.tracking.traces): a real evaluation against a loopback
OpenAI-compatible server scripted to search, answer and once reply without an action (a re-ask),
logged to the loopback MLflow server; a resume adds only its new questions' traces."""

import mlflow
import pytest

from fireact import tracking
from fireact.evaluate.run import evaluate
from fireact.tasks import HotpotQA
from fireact.tracking.traces import traced
from fireact.trajectory_files import read_jsonl
from tests.llm.servers import FaultServer, Reply

QUESTIONS = HotpotQA(shuffle_seed=233, n=4).questions()
REASKED, WRONG = QUESTIONS[0], QUESTIONS[1]


def agent(attempt, request):
    """Round 1 searches the question (the first question's reply has no action, so it is re-asked);
    round 2 answers: the gold answer, except for the second question."""
    prompt = request["prompt"]
    question = next(q for q in QUESTIONS if q.question in prompt)
    if prompt.endswith("\nAction:"):  # the re-ask continues the reply with the cue
        return Reply(text=f" search[{question.question}]")
    if "Observation:" not in prompt:
        if question is REASKED:
            return Reply(text=" I should look this up.")
        return Reply(text=f" I should look this up.\nAction: search[{question.question}]")
    answer = "nobody" if question is WRONG else question.gold
    return Reply(text=f" I know it now.\nAction: finish[{answer}]")


def settings(server, *extra):
    return ["method.format=alpaca", "method.max_rounds=3", "method.max_retries=1", "model=gpt35", "model.path=scripted",
            "backend=openai", "backend.api=completions", f"backend.base_url={server.base_url}", "noise=none_obs",
            "noise.p=0.5", *extra]


def run_traces(experiment: str) -> dict[str, list]:
    """Each evaluate run's traces, by run id, oldest run first."""
    runs = mlflow.search_runs(experiment_names=[experiment], order_by=["attributes.start_time ASC"], output_format="list")
    return {run.info.run_id: mlflow.search_traces(locations=[run.info.experiment_id], run_id=run.info.run_id,
                                                  return_type="list")
            for run in runs}


def test_each_trajectory_is_a_trace_of_its_run_with_rounds_calls_and_assessments(tracking_uri, compose_cfg, tmp_path):
    with FaultServer(agent) as server:
        evaluate(compose_cfg("evaluate", *settings(server, "task.n=3", "experiment_name=traces")))
        trajectories = {t.qid: t for t in read_jsonl(tmp_path / "out" / "trajectories.jsonl")[0]}
        (traces,) = run_traces("traces").values()
        assert sorted(trace.info.tags["mlflow.traceName"] for trace in traces) == sorted(f"hotpotqa:{q}" for q in trajectories)

        noisy = set()
        for trace in traces:
            t = trajectories[trace.info.tags["mlflow.traceName"].removeprefix("hotpotqa:")]
            tags = trace.info.tags
            assert (tags["task"], tags["method"], tags["backend"], tags["model"], tags["noise"], tags["stage"]) == \
                   ("hotpotqa", "react", "openai", t.model, "none_obs", "evaluate")
            assessments = {a.name: a.value for a in trace.info.assessments}
            assert assessments == {"exact_match": t.em == 1.0, "f1": pytest.approx(t.f1), "expected_answer": t.gold}
            spans = trace.data.spans
            root = next(s for s in spans if s.parent_id is None)
            assert root.inputs["question"] == t.question and root.outputs == {"answer": t.answer}
            rounds = [s for s in spans if s.name.startswith("round ")]
            assert [s.outputs["action"] for s in sorted(rounds, key=lambda s: s.name)] == [x.action_text for x in t.steps]
            llm = [s for s in spans if s.span_type == "LLM"]
            usage = [s.attributes["mlflow.chat.tokenUsage"] for s in llm]
            assert sum(u["input_tokens"] for u in usage) == t.prompt_tokens
            assert sum(u["output_tokens"] for u in usage) == t.completion_tokens
            assert ("llm re-ask 1" in {s.name for s in llm}) == (t.qid == REASKED.qid)
            tools = [s for s in spans if s.span_type == "TOOL"]
            assert [s.outputs["observation"] for s in tools] == [x.observation for x in t.steps if x.is_tool_call]
            for span in tools:  # noise: the agent saw "None", the span keeps what the tool said
                assert span.attributes["noisy"] == (span.outputs["observation"] == "None")
                assert span.attributes["noisy"] == ("tool_observation" in span.attributes)
                noisy.add(span.attributes["noisy"])
        assert noisy == {True, False}
        assert {t.em for t in trajectories.values()} == {0.0, 1.0}

        # A resume (one more question) traces only that question, in its own run.
        evaluate(compose_cfg("evaluate", *settings(server, "task.n=4", "experiment_name=traces")))
    first, resumed = run_traces("traces").values()
    assert len(first) == 3 and [t.info.tags["mlflow.traceName"] for t in resumed] == [f"hotpotqa:{QUESTIONS[3].qid}"]


def test_traces_turn_off_and_sample_by_question(tracking_uri, compose_cfg):
    with FaultServer(agent) as server:
        evaluate(compose_cfg("evaluate", *settings(server, "task.n=2", "experiment_name=no-traces",
                                                   "tracker.traces=0")))
    (traces,) = run_traces("no-traces").values()
    assert traces == []
    with pytest.raises(Exception, match=r"tracker.traces=1.5: the share of questions traced must be in \[0, 1\]"):
        tracking.check(compose_cfg("evaluate", "tracker.traces=1.5"))  # before any work
    qids = [f"q{i}" for i in range(2000)]
    half = [q for q in qids if traced(q, 0.5)]
    assert 900 < len(half) < 1100 and half == [q for q in qids if traced(q, 0.5)]
    assert all(traced(q, 1.0) for q in qids) and not any(traced(q, 0.0) for q in qids)
