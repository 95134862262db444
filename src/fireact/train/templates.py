"""Prompt templates for training: a trajectory becomes token segments, each with a role.

Done the torchtune way: the token sequence is built segment by segment (one segment per
message or ReAct field group), and each segment is tokenized on its own, so the boundary
between what the agent wrote and what it was given is exact by construction. Roles:

- "prompt": the question, the header, chat role headers: never trained on.
- "agent": the agent's own thoughts and actions, and the end of its turn (the chat template's
  end-of-turn marker; in Alpaca text the "Observation:" label, where the rollout stops
  generating, and the final end-of-sequence token): always trained on.
- "observation": what the tool returned: trained on only with `train_on_observations`.

Two templates, matching how the `hf` backend prompts at rollout time:
- `AlpacaTemplate`: the FireAct header (fireact.trajectory.ALPACA_HEADER) then ReAct lines,
  the prompt a plain string (tokenized with the tokenizer's default special tokens).
- `ChatTemplate`: `tokenizer.apply_chat_template` over the chat messages of
  fireact.trajectory.to_chat (user question, assistant Thought/Action, user Observation).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from fireact.trajectory import ALPACA_HEADER, Step, TokenTrace, Trajectory, render_step, to_chat

ROLES = ("prompt", "agent", "observation")
IGNORE_INDEX = -100  # the label transformers' loss skips


@dataclass
class Segment:
    ids: list[int]
    role: str


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


def _agent_text(step: Step) -> str:
    """The step's Thought/Action lines, without its observation ("" if it has neither)."""
    if not step.thought and not step.action and step.argument is None:
        return ""
    return render_step(replace(step, observation=None))


class AlpacaTemplate:
    """FireAct's Alpaca format: header with the question, then the ReAct lines, then EOS.

    add_eos: append the tokenizer's end-of-sequence token as the agent's last token, so the
        model learns to stop after its final answer (as FireAct's Alpaca training did).
    """

    name = "alpaca"

    def __init__(self, add_eos: bool = True):
        self.add_eos = add_eos

    def segments(self, trajectory: Trajectory, tokenizer) -> list[Segment]:
        header = ALPACA_HEADER.format(question=trajectory.question)
        # The first segment gets the tokenizer's default special tokens (BOS for Llama), as
        # the hf backend's tokenizer(prompt) does at rollout time; later ones get none.
        segments = [Segment(tokenizer(header)["input_ids"], "prompt")]
        for step in trajectory.steps:
            agent = _agent_text(step)
            if agent:
                segments.append(Segment(_encode(tokenizer, agent), "agent"))
            if step.observation is not None:
                # After an action the label is the agent's: writing it ends the turn (the
                # rollout's stop string is "\nObservation:"); what the tool returned is not.
                segments.append(Segment(_encode(tokenizer, "Observation:"), "agent" if agent else "observation"))
                segments.append(Segment(_encode(tokenizer, f" {step.observation}\n"), "observation"))
        if self.add_eos and tokenizer.eos_token_id is not None:
            segments.append(Segment([tokenizer.eos_token_id], "agent"))
        return segments


class ChatTemplate:
    """The tokenizer's chat template over the trajectory's chat messages.

    Each message's text is what the template adds when that message is appended, so the
    concatenation is exactly the template's rendering of the whole conversation (checked:
    a template that rewrites earlier turns when later ones are added is refused). An
    assistant message is split into its role header (prompt: the backend supplies it with
    add_generation_prompt) and its content with the end-of-turn marker (agent).
    """

    name = "chat"

    def segments(self, trajectory: Trajectory, tokenizer) -> list[Segment]:
        if not getattr(tokenizer, "chat_template", None):
            raise ValueError(
                f"template=chat needs a tokenizer with a chat template, and {tokenizer.name_or_path!r} has none; "
                f"use format=alpaca"
            )
        messages = to_chat(trajectory)["messages"]
        segments: list[Segment] = []
        rendered = ""
        for index, message in enumerate(messages):
            if message["role"] == "assistant":
                with_header = _render(tokenizer, messages[:index], add_generation_prompt=True)
                segments.append(Segment(_encode(tokenizer, _suffix(with_header, rendered)), "prompt"))
                rendered = with_header
            full = _render(tokenizer, messages[: index + 1])
            piece = _suffix(full, rendered)
            role = "agent" if message["role"] == "assistant" else "observation" if index > 0 else "prompt"
            segments.append(Segment(_encode(tokenizer, piece), role))
            rendered = full
        return segments


def _render(tokenizer, messages: list[dict], add_generation_prompt: bool = False) -> str:
    if not messages:
        return ""
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def _suffix(full: str, prefix: str) -> str:
    if not full.startswith(prefix):
        raise ValueError(
            "the tokenizer's chat template renders earlier messages differently once later ones are added, "
            "so per-message loss masking cannot be exact; use format=alpaca for this model"
        )
    return full[len(prefix):]


def _encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]
