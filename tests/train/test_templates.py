"""Loss masking: labels are -100 exactly on the question and observation tokens."""

import pytest

from fireact.train.examples import IGNORE_INDEX, build_example

from fireact.formats import Alpaca, Chat
from fireact.formats import ALPACA_HEADER
from fireact.trajectory import Step, Trajectory


def spans(example):
    """(role, ids, labels) for each segment, cut from the example's flat lists."""
    start = 0
    for segment in example.segments:
        end = start + len(segment.ids)
        yield segment.role, example.input_ids[start:end], example.labels[start:end]
        start = end


def test_alpaca_masks_exactly_question_and_observations(released, tokenizer):
    trajectory = released[0]
    example = build_example(Alpaca().segments(trajectory, tokenizer), False, None)

    masked_text = "".join(tokenizer.decode(ids) for role, ids, labels in spans(example) if labels[0] == IGNORE_INDEX)
    expected_masked = ALPACA_HEADER.format(question=trajectory.question) + "".join(
        f" {step.observation}\n" for step in trajectory.steps
    )
    assert masked_text == expected_masked
    for role, ids, labels in spans(example):
        if role in ("prompt", "observation"):
            assert labels == [IGNORE_INDEX] * len(ids)
        else:
            assert labels == ids
    # Trained: thoughts, actions, the "Observation:" label that ends each turn (where the
    # rollout stops), and the final end of sequence.
    trained = tokenizer.decode([t for t, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX])
    turns = "".join(f"Thought: {s.thought}\nAction: {s.action_text}\nObservation:" for s in trajectory.steps)
    assert trained == turns + tokenizer.eos_token
    # The sequence is the one the hf backend sees at rollout time, token for token.
    whole = tokenizer(ALPACA_HEADER.format(question=trajectory.question) + trajectory.react_text())["input_ids"]
    assert example.input_ids == whole + [tokenizer.eos_token_id]


def test_alpaca_trains_on_observations_when_asked(released, tokenizer):
    example = build_example(Alpaca().segments(released[1], tokenizer), True, None)
    for role, ids, labels in spans(example):
        assert labels == ([IGNORE_INDEX] * len(ids) if role == "prompt" else ids)
    assert any(role == "observation" for role, _, _ in spans(example))


def test_chat_template_masks_per_message(released, tokenizer):
    trajectory = released[2]
    example = build_example(Chat().segments(trajectory, tokenizer), False, None)
    rendered = tokenizer.apply_chat_template(Chat().record(trajectory)["messages"], tokenize=False)
    assert tokenizer.decode(example.input_ids) == rendered

    for role, ids, labels in spans(example):
        text = tokenizer.decode(ids)
        if role == "agent":
            assert labels == ids and text.startswith("Thought: ") and text.endswith("<|im_end|>\n")
        else:
            assert labels == [IGNORE_INDEX] * len(ids)
        if role == "observation":
            assert text.startswith("<|im_start|>user\nObservation: ")
    headers = [tokenizer.decode(ids) for role, ids, _ in spans(example) if role == "prompt"]
    assert trajectory.question in headers[0]
    assert headers[1:] == ["<|im_start|>assistant\n"] * len(trajectory.steps)


def test_chat_template_that_rewrites_history_is_refused(released, tokenizer):
    import copy

    odd = copy.deepcopy(tokenizer)
    odd.chat_template = "{{ messages | length }}{% for m in messages %}{{ m['content'] }}{% endfor %}"
    with pytest.raises(ValueError, match="format=alpaca"):
        Chat().segments(released[0], odd)


def test_truncation_cuts_and_flags(released, tokenizer):
    segments = Alpaca().segments(released[0], tokenizer)
    full = build_example(segments, False, None)
    cut = build_example(segments, False, 50)
    assert not full.truncated and cut.truncated
    assert cut.input_ids == full.input_ids[:50] and cut.labels == full.labels[:50]


def test_a_step_without_thought_or_action_adds_no_agent_tokens(tokenizer):
    trajectory = Trajectory(task="t", qid="0", question="Q?", gold="", steps=[Step(observation="only seen")])
    segments = Alpaca(add_eos=False).segments(trajectory, tokenizer)
    assert [s.role for s in segments] == ["prompt", "observation", "observation"]
    assert build_example(segments, False, None).trainable_tokens == 0
