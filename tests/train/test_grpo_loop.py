"""GRPO's loop on a tiny model through Lightning, with a rollout function and a reward function
given to the objective: the data yields questions, the objective samples each `group_size` times
under sample numbers that say the rollout step, rewards them with the reward function, and trains
`num_iterations` optimizer steps on one sampling (under gradient accumulation too)."""

from functools import partial

import pytorch_lightning as pl
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from fireact.tasks import HotpotQA
from fireact.train.module import CausalLMModule
from fireact.train.objectives import GRPO
from fireact.train.question_data import QuestionDataModule
from fireact.trajectory import TokenTrace, Trajectory


class ScriptedRollout:
    """A rollout function that writes down what it was asked and answers each (question, sample)
    with a 3-id prompt and 4 sampled ids drawn by the model itself (their log-probabilities as drawn)."""

    temperature = 1.0

    def __init__(self):
        self.calls: list[tuple[int, list[tuple[str, int]]]] = []

    def __call__(self, model, questions, samples, step):
        self.calls.append((step, [(q.qid, s) for q, s in zip(questions, samples)]))
        trajectories = []
        for question, sample in zip(questions, samples):
            trace = TokenTrace("alpaca")
            trace.add([1, 2, 3 + sample % 7])
            generator = torch.Generator().manual_seed(sample)
            for _ in range(4):
                with torch.no_grad():
                    logps = torch.log_softmax(model(input_ids=torch.tensor([trace.ids])).logits[0, -1].float(), -1)
                token = int(torch.multinomial(logps.exp(), 1, generator=generator))
                trace.add([token], [float(logps[token])])
            trajectories.append(Trajectory(task="hotpotqa", qid=question.qid, question=question.question,
                                           gold=question.gold, sample=sample, answer="x", em=0.0, f1=0.0, tokens=trace))
        return trajectories


def reward(trajectory: Trajectory) -> float:
    return float(trajectory.sample % 2)  # the two members of each group differ


def fit(accumulate: int, iterations: int, steps: int) -> tuple[ScriptedRollout, CausalLMModule]:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64))
    rollout = ScriptedRollout()
    objective = GRPO(rollout=rollout, reward=reward, group_size=2, num_iterations=iterations, max_length=32)
    data = QuestionDataModule(HotpotQA(split="train", n=8), batch_size=2)
    data.iterations = iterations
    module = CausalLMModule(model, objective=objective, optimizer=partial(torch.optim.AdamW, lr=1e-2),
                            lr_schedule="cosine", warmup_ratio=0.0)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accumulate_grad_batches=accumulate)
    trainer.fit(module, datamodule=data)
    return rollout, module


@pytest.mark.parametrize("accumulate", [1, 2])
def test_each_rollout_step_samples_once_and_trains_num_iterations_updates(accumulate):
    rollout, module = fit(accumulate, iterations=2, steps=4)
    # 4 optimizer steps = 2 rollout steps, each sampled once per batch of questions
    assert [step for step, _ in rollout.calls] == [0] * accumulate + [1] * accumulate
    for step, asked in rollout.calls:
        assert [sample for _, sample in asked] == [2 * step, 2 * step + 1] * 2  # 2 questions x group of 2
        assert asked[0][0] == asked[1][0] != asked[2][0] == asked[3][0]
    asked = [qid for _, call in rollout.calls for qid, _ in call[::2]]
    assert len(set(asked)) == len(asked) == 4 * accumulate  # no question twice in an epoch
    first, second, third = module.metrics[::accumulate][:3]  # a step's first batch: iterations 1, 2, then a new step
    assert first["reward"] == second["reward"] == 0.5 and first["groups_without_signal"] == 0.0
    # the first update's ratio is 1 (the policy that sampled), the second's has moved
    assert abs(first["ratio"] - 1) < 1e-5 < abs(second["ratio"] - 1)
    assert abs(third["ratio"] - 1) < 1e-5  # a new rollout step samples from the moved policy


def test_a_group_size_below_2_is_a_clear_error():
    with pytest.raises(ValueError, match="group_size=1"):
        GRPO(rollout=ScriptedRollout(), reward=reward, group_size=1)
