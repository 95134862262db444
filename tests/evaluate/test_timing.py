"""Time per trial, latency and throughput from `evaluate`'s summary: right over several chunks
and after a resume. A real run against a loopback OpenAI-compatible server that takes DELAY_S
per reply (tests/llm/servers.py), so every trajectory takes at least that long."""

import time

import pytest
from hydra.core.global_hydra import GlobalHydra

from fireact.evaluate.run import evaluate
from fireact.evaluate.summary import busy_seconds
from fireact.tasks import HotpotQA
from fireact.trajectory import Trajectory
from fireact.trajectory_files import read_jsonl
from tests.conftest import compose_config
from tests.llm.servers import FaultServer, Reply

DELAY_S = 0.3
GAP_S = 1.5


def test_busy_time_is_the_union_of_the_trajectories_spans():
    span = lambda start, seconds: Trajectory("hotpotqa", f"q{start}", "?", "x", started_at=start, wall_time=seconds)  # noqa: E731
    chunks = [span(100, 4), span(100, 10), span(110, 5), span(112, 3)]  # two chunks, one after the other
    assert busy_seconds(chunks) == pytest.approx(15)
    assert busy_seconds([*chunks, span(200, 2)]) == pytest.approx(17)  # a resume 85 s later: the pause is not counted
    assert busy_seconds([span(0, 4), span(0, 7)]) == pytest.approx(7)  # records from before started_at: the longest


def run(tmp_path, server, n, in_flight):
    cfg = compose_config("evaluate", [
        f"task.n={n}", f"in_flight={in_flight}", "method.max_rounds=2", "method.max_retries=0", "model=gpt35",
        "model.path=timed", "backend=openai", "backend.api=completions", f"backend.base_url={server.base_url}", "~tracker",
    ], out_dir=tmp_path)
    try:
        return evaluate(cfg)
    finally:
        GlobalHydra.instance().clear()


def test_time_per_trial_over_chunks_and_a_resume(tmp_path):
    gold = {q.question: q.gold for q in HotpotQA(shuffle_seed=233, n=4).questions()}
    answer = lambda prompt: next(g for question, g in gold.items() if question in prompt)  # noqa: E731
    with FaultServer(lambda attempt, request: Reply(text=f" Easy.\nAction: finish[{answer(request['prompt'])}]",
                                                     delay_s=DELAY_S)) as server:
        first = run(tmp_path, server, n=2, in_flight=1)  # two questions, one after the other
        time.sleep(GAP_S)
        summary = run(tmp_path, server, n=4, in_flight=1)  # resumes: two more

    assert first["n"] == 2 and summary["n"] == 4 and summary["em"] == 1.0
    trajectories, _ = read_jsonl(tmp_path / "trajectories.jsonl")
    assert all(t.wall_time >= DELAY_S for t in trajectories)
    starts = sorted(t.started_at for t in trajectories)
    assert starts[-1] - starts[0] > GAP_S  # the resumed questions started after the pause
    # One question at a time: each trial's time is its own latency, the pause counts nowhere.
    assert summary["latency_mean"] == pytest.approx(sum(t.wall_time for t in trajectories) / 4)
    assert DELAY_S <= summary["time_per_trial"] == pytest.approx(summary["latency_mean"], rel=1e-6)
    assert summary["throughput"] == pytest.approx(1 / summary["time_per_trial"])
    assert summary["time_per_trial"] < DELAY_S + GAP_S / 4
