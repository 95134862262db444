"""Training examples: a trajectory's token segments (fireact.formats) or a rollout's token trace
become input ids and labels, IGNORE_INDEX where nothing is trained."""

from __future__ import annotations

from dataclasses import dataclass, field

from fireact.formats import Segment
from fireact.trajectory import TokenTrace

IGNORE_INDEX = -100  # the label transformers' loss skips


@dataclass
class Example:
    """One tokenized trajectory: input ids, labels (-100 where not trained), and its segments;
    from a rollout's token trace, each id's sampling log-probability (0 where not sampled)."""

    input_ids: list[int]
    labels: list[int]
    segments: list[Segment] = field(default_factory=list)
    truncated: bool = False
    logprobs: list[float] | None = None

    @property
    def trainable_tokens(self) -> int:
        return sum(label != IGNORE_INDEX for label in self.labels)


def build_example(segments: list[Segment], train_on_observations: bool, max_length: int | None) -> Example:
    """Concatenate segments and mask labels per segment; cut at `max_length` if given."""
    trained = {"agent", "observation"} if train_on_observations else {"agent"}
    input_ids: list[int] = []
    labels: list[int] = []
    for segment in segments:
        input_ids.extend(segment.ids)
        labels.extend(segment.ids if segment.role in trained else [IGNORE_INDEX] * len(segment.ids))
    truncated = max_length is not None and len(input_ids) > max_length
    if truncated:
        input_ids, labels = input_ids[:max_length], labels[:max_length]
    return Example(input_ids, labels, segments, truncated)


def sampled_example(trace: TokenTrace, max_length: int | None) -> Example:
    """A rollout's own tokens (fireact.agents.rollout): the ids as the policy saw and wrote them,
    labeled where it sampled them, masked where the harness put them (the prompt, observations,
    cues; a step forced to finish[] was never sampled and is not there); cut at `max_length`."""
    mask = trace.mask()
    labels = [i if sampled else IGNORE_INDEX for i, sampled in zip(trace.ids, mask)]
    drawn = iter(trace.logprobs)
    logprobs = [next(drawn) if sampled else 0.0 for sampled in mask]
    truncated = max_length is not None and len(trace.ids) > max_length
    end = max_length if truncated else len(trace.ids)
    return Example(trace.ids[:end], labels[:end], truncated=truncated, logprobs=logprobs[:end])
