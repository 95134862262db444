"""Token in, token out: on a local engine the rollout keeps the ids it fed and the ids the policy
sampled, and trains on those, never on a re-rendering. The policy here is scripted (its replies
are chosen to be malformed in the ways the parser repairs) and speaks through SmolLM2's real
tokenizer, as the hf backend does: each reply's ids are the tokenizer's for its raw text through
the stop string, each with a log-probability."""

import pytest
from transformers import AutoTokenizer

from fireact.agents.methods import ReAct
from fireact.agents.rollout import Rollout
from fireact.llm.base import LLM, Completion, TokenIds, cut_at_stop
from fireact.llm.embedded import resolve_model_path
from fireact.tasks import HotpotQA
from fireact.tasks.base import Question
from fireact.train.examples import IGNORE_INDEX, sampled_example
from fireact.trajectory import Trajectory

from tests.agents.test_rollout import DictTool

END = "<|im_end|>"  # SmolLM2-Instruct's end of turn (its end-of-sequence token)
QUESTION = Question("1", "Who named Milhouse?", "Richard Nixon")


@pytest.fixture(scope="module")
def tokenizer():
    return AutoTokenizer.from_pretrained(resolve_model_path("embedded:smollm2-135m-instruct"))


class TokenPolicy(LLM):
    """Replies from a list, in order, as a local engine returns them: the ids of the raw reply
    through its stop string (what generation would have sampled), the text cut at the stop."""

    backend, model = "scripted", "script"
    samples_tokens = True

    def __init__(self, tokenizer, replies):
        self.tokenizer, self.replies, self.prompts = tokenizer, list(replies), []

    def encode(self, prompt, special_tokens=True):
        if isinstance(prompt, TokenIds):
            return list(prompt)
        if isinstance(prompt, str):
            return self.tokenizer(prompt, add_special_tokens=special_tokens)["input_ids"]
        return self.tokenizer.apply_chat_template(prompt, add_generation_prompt=True, return_dict=True)["input_ids"]

    def decode(self, ids):
        return self.tokenizer.decode(list(ids), skip_special_tokens=False)

    def generate(self, prompts, stop=(), max_tokens=256, seeds=None):
        out = []
        for prompt in prompts:
            assert isinstance(prompt, TokenIds)  # never text: what was sampled is not tokenized again
            self.prompts.append(list(prompt))
            raw = self.replies.pop(0)
            text, stopped = cut_at_stop(raw.removesuffix(END), stop)  # the end-of-turn token ends the text
            if stopped:  # generation halts on the token that completes the stop string
                raw = raw[: len(text) + len(next(s for s in stop if raw[len(text):].startswith(s)))]
            ids = self.encode(raw, special_tokens=False)
            logprobs = [-0.5 - i / 64 for i in range(len(ids))]  # float32 values, as engines give
            out.append(Completion(text, len(prompt), len(ids), "stop", token_ids=ids, logprobs=logprobs, stop=stopped))
        return out


def run(tokenizer, replies, **method) -> tuple[Trajectory, TokenPolicy]:
    policy = TokenPolicy(tokenizer, replies)
    tool = DictTool({"milhouse": "named after Richard Nixon"})
    [trajectory] = Rollout(policy, ReAct(**method), HotpotQA(), tool).run([QUESTION])
    return trajectory, policy


def spans(policy, trace) -> list[str]:
    return [policy.decode(trace.ids[start:end]) for start, end in trace.sampled]


def test_a_reply_is_kept_as_sampled_and_the_next_prompt_continues_its_ids(tokenizer):
    """Extra spaces, an argument with a space before its bracket: the parser reads a tidy step,
    the trace keeps the reply as written, and the next prompt is the ids so far plus the
    observation's, not the prompt rendered again."""
    messy = "  Let me   search.\nAction:  search[milhouse]  \nObservation: I imagine"
    trajectory, policy = run(tokenizer, [messy, " Nixon named him.\nAction: finish[Richard Nixon]\nObservation: x"],
                             format="alpaca")
    trace = trajectory.tokens
    assert trajectory.steps[0].thought == "Let me   search." and trajectory.steps[0].argument == "milhouse"
    assert spans(policy, trace) == ["  Let me   search.\nAction:  search[milhouse]  \nObservation:",
                                    " Nixon named him.\nAction: finish[Richard Nixon]\nObservation:"]
    first_reply_end = trace.sampled[0][1]
    assert policy.prompts[1][:first_reply_end] == trace.ids[:first_reply_end]  # the sampled ids, as they were
    harness = policy.decode(trace.ids[first_reply_end : trace.sampled[1][0]])
    assert harness == " named after Richard Nixon\nThought:"
    assert len(trace.logprobs) == sum(end - start for start, end in trace.sampled)


def test_a_repaired_reply_and_a_forced_finish_train_only_what_was_sampled(tokenizer):
    """No action twice (max_retries=1): the re-ask continues the reply after the cue, and the
    round then counts as finish[] with a format error; that finish[] was never sampled, so it is
    not in the trace, and the two replies the policy did write are trained, the cue is not."""
    trajectory, policy = run(tokenizer, ["I am not sure.\n\nObservation: none", "\n\nObservation: none"],
                             format="alpaca", max_retries=1)
    trace = trajectory.tokens
    assert trajectory.format_errors == 1 and trajectory.steps[-1].action == "finish"
    # The reply is continued after its text (the newline it wrote stays) with the rest of the cue.
    assert spans(policy, trace) == ["I am not sure.\n", "\n\nObservation:"]
    cue = policy.decode(trace.ids[trace.sampled[0][1] : trace.sampled[1][0]])
    assert cue == "Action:"
    assert "finish[" not in policy.decode(trace.ids)
    example = sampled_example(trace, max_length=None)
    labeled = [i for i, label in enumerate(example.labels) if label != IGNORE_INDEX]
    assert labeled == [i for start, end in trace.sampled for i in range(start, end)]
    assert [example.logprobs[i] for i in labeled] == pytest.approx(trace.logprobs)
    assert all(example.logprobs[i] == 0.0 for i in range(len(example.labels)) if i not in labeled)


def test_chat_turns_are_continued_with_the_chat_templates_tokens(tokenizer):
    trajectory, policy = run(tokenizer, ["Thought: Search it.\nAction: search[milhouse]<|im_end|>",
                                         "Thought: Got it.\nAction: finish[Richard Nixon]<|im_end|>"], format="chat")
    trace = trajectory.tokens
    assert trajectory.answer == "Richard Nixon"
    between = policy.decode(trace.ids[trace.sampled[0][1] : trace.sampled[1][0]])
    assert between == "\n<|im_start|>user\nObservation: named after Richard Nixon<|im_end|>\n<|im_start|>assistant\n"
    # A round trip through the trajectory file keeps the trace exactly.
    assert Trajectory.from_dict(trajectory.to_dict()).tokens == trace


def test_sft_and_dpo_data_train_a_sampled_trajectory_on_its_sampled_ids(tokenizer):
    """A generated file's trajectory sampled in the format trained in is trained on its sampled ids
    (RFT, and DPO's pairs, read trajectories through the same encode); one rendered in another
    format (a few-shot teacher's) is rendered in the training format, as released data are."""
    from fireact.train.datamodule import TrajectoryDataModule
    from fireact.formats import Alpaca

    replies = ["  Let me   search.\nAction:  search[milhouse]  \nObservation: I imagine",
               " Nixon named him.\nAction: finish[Richard Nixon]\nObservation: x"]
    sampled, _ = run(tokenizer, replies, format="alpaca")
    fewshot, _ = run(tokenizer, replies, format="fewshot")
    data = TrajectoryDataModule(path="unused", format=Alpaca(), tokenizer=tokenizer)
    example = data.encode(sampled)
    assert example.input_ids == sampled.tokens.ids and example.logprobs is not None
    assert example.labels == sampled_example(sampled.tokens, None).labels
    rendered = data.encode(fewshot)
    assert rendered.logprobs is None and rendered.input_ids != fewshot.tokens.ids
    assert tokenizer.decode(rendered.input_ids).startswith("Below is an instruction")
