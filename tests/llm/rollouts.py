"""Greedy ReAct rollouts of the same questions three ways, for the backend tests: the stream
engine batching every ready ask (together), one question at a time (alone: in_flight=1, the
paper's loop) and the round barrier (in rounds: gather_s=None, the loop before questions became
streams). A backend's greedy trajectories must not depend on which."""

from __future__ import annotations


def three_ways(llm, alone_llm=None, questions: int = 4) -> dict[str, list[dict]]:
    """The trajectories (as dicts, without their clock times) of HotpotQA's first `questions`
    over the recorded search, 3 rounds of up to 40 tokens, one re-ask; `alone_llm` (default
    `llm`) runs the one-at-a-time side."""
    from fireact.agents.methods import ReAct
    from fireact.agents.rollout import Rollout
    from fireact.tasks import HotpotQA
    from fireact.tools.recorded_search import RecordedSearch

    task = HotpotQA(n=questions)
    method, tool = ReAct(max_rounds=3, max_tokens=40, max_retries=1), RecordedSearch()
    plain = lambda trajectories: [{k: v for k, v in t.to_dict().items() if k not in ("wall_time", "started_at")}
                                  for t in trajectories]
    return {
        "together": plain(Rollout(llm, method, task, tool).run(task.questions())),
        "alone": plain(Rollout(alone_llm or llm, method, task, tool).run(task.questions(), in_flight=1)),
        "in_rounds": plain(Rollout(llm, method, task, tool, gather_s=None).run(task.questions())),
    }
