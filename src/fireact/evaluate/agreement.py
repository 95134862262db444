"""How often two agents did the same thing on the same questions.

Used to compare backends (hf, vllm, an OpenAI-compatible server) running the same model with
greedy decoding: kernels differ, so a near-tie between two tokens can flip and the trajectories
part from there. Compared over the questions both have a trajectory for.
"""

from __future__ import annotations

from collections.abc import Sequence

from fireact.trajectory import Trajectory


def same_trajectory(a: Trajectory, b: Trajectory) -> bool:
    """Same thoughts, actions, arguments, observations and answer, step by step."""
    key = lambda t: ([(s.thought, s.action, s.argument, s.observation) for s in t.steps], t.answer)
    return key(a) == key(b)


def agreement(reference: Sequence[Trajectory], other: Sequence[Trajectory]) -> dict[str, float]:
    """{compared, same_trajectory, same_answer, same_first_step}: shares over the questions both have."""
    mine = {t.qid: t for t in reversed(other)}  # the first trajectory of a question wins
    theirs = {t.qid: t for t in reversed(reference)}
    pairs = [(theirs[qid], mine[qid]) for qid in theirs if qid in mine]
    if not pairs:
        return {"compared": 0, "same_trajectory": float("nan"), "same_answer": float("nan"),
                "same_first_step": float("nan")}
    share = lambda same: sum(map(same, *zip(*pairs))) / len(pairs)
    return {
        "compared": len(pairs),
        "same_trajectory": share(same_trajectory),
        "same_answer": share(lambda a, b: (a.answer or "") == (b.answer or "")),
        "same_first_step": share(lambda a, b: a.steps[:1] == b.steps[:1]),
    }
