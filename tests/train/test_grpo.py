"""GRPO end to end on the embedded model: each step the policy being trained samples groups of
trajectories through the rollout engine and the recorded search tool, they are rewarded and
masked as SFT data, and the adapter moves only when a group's rewards differ; a run resumed from
its checkpoint draws, records and trains exactly as the uninterrupted one."""

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from safetensors.torch import load_file

from fireact.paths import CONF_DIR
from fireact.train.run import train
from fireact.trajectory_files import read_jsonl

# Short trajectories: 2 rounds of at most 24 tokens. The rewards (a cost per search and a
# penalty for no answer) part trajectories that all miss the gold answer, so groups differ.
SMALL = [
    "objective=grpo", "data=questions", "data.task.n=4", "data.batch_size=2", "objective.group_size=2",
    "objective.rollout.method.max_rounds=2", "objective.rollout.method.max_tokens=24",
    "objective.reward.search_cost=0.25", "objective.reward.format_penalty=0.5", "finetune=lora", "optimizer.lr=1e-3", "trainer.enable_progress_bar=false",
    "callbacks.checkpoint.every_n_train_steps=1", "~tracker", "logger=csv",
]


def grpo_config(out_dir, *overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose("train", [*SMALL, *overrides, f"paths.output_dir={out_dir}"])


def adapter_moved(run_dir) -> bool:
    """LoRA's B matrices start at zero: any nonzero one means a step changed the adapter."""
    weights = load_file(run_dir / "adapter" / "adapter_model.safetensors")
    return any(bool(w.abs().sum() > 0) for name, w in weights.items() if "lora_B" in name)


def test_grpo_samples_groups_with_the_policy_and_moves_only_on_differing_rewards(tmp_path):
    summary = train(grpo_config(tmp_path / "run", "trainer.max_steps=1"))
    assert summary["objective"] == "grpo" and summary["optimizer_steps"] == 1
    assert summary["data"] == {"questions": 4}
    assert summary["rollout_seconds_mean"] > 0 and 1 <= summary["turns_mean"] <= 2
    # rewards are EM (0 or 1) less 0.25 a search and 0.5 without an answer
    assert -1.0 <= summary["reward_mean"] <= 1.0
    assert adapter_moved(tmp_path / "run") == (summary["groups_without_signal_mean"] < 1)


def test_a_resumed_grpo_run_samples_and_trains_as_the_uninterrupted_one(tmp_path):
    whole = train(grpo_config(tmp_path / "whole", "trainer.max_steps=2"))
    train(grpo_config(tmp_path / "cut", "trainer.max_steps=1"))
    resumed = train(grpo_config(tmp_path / "cut", "trainer.max_steps=2", "resume=true"))
    assert resumed["resumed_from"].endswith("last.ckpt") and resumed["optimizer_steps"] == 2
    for key in ("reward_last", "completion_tokens_last", "turns_last"):
        assert resumed[key] == whole[key], key
    drawn = {run: [(t.qid, t.sample, t.answer, t.completion_tokens) for t in read_jsonl(tmp_path / run / "rollouts.jsonl")[0]]
             for run in ("whole", "cut")}
    assert len(drawn["whole"]) == 8 and drawn["cut"] == drawn["whole"]  # 2 steps x 2 questions x 2, each once
    assert sorted({sample for _, sample, _, _ in drawn["whole"]}) == [0, 1, 2, 3]  # step x group size + place
    whole_weights = load_file(tmp_path / "whole" / "adapter" / "adapter_model.safetensors")
    resumed_weights = load_file(tmp_path / "cut" / "adapter" / "adapter_model.safetensors")
    assert all(torch.allclose(whole_weights[k], resumed_weights[k], atol=1e-6) for k in whole_weights)


def test_grpo_on_trajectory_data_is_a_clear_error(tmp_path):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", ["objective=grpo", "~tracker", "logger=csv", f"paths.output_dir={tmp_path}"])
    with pytest.raises(InstantiationException, match="use data=questions"):  # Hydra's, around the ValueError
        train(cfg)


def test_rollouts_are_prompted_in_the_format_the_policy_trains_in(tmp_path):
    for name in ("alpaca", "chat"):
        rollout = instantiate(grpo_config(tmp_path, f"format={name}").objective).rollout
        assert rollout.method.format == name


@pytest.mark.parametrize("strategy", [["trainer=fsdp"], ["trainer=deepspeed", "trainer.strategy.stage=3"]])
def test_grpo_under_a_strategy_that_shards_the_weights_is_a_clear_error(strategy, tmp_path):
    with pytest.raises(ValueError, match="use trainer=cpu, gpu, ddp or deepspeed"):
        train(grpo_config(tmp_path, *strategy))
    assert not (tmp_path / "checkpoints").exists()


class CompletionLength:
    """A reward that parts trajectories by how many tokens they wrote: one for GRPO's mechanics."""

    def __call__(self, trajectory) -> float:
        return trajectory.completion_tokens / 100


def test_two_iterations_update_twice_on_one_rollout_step_and_the_ratio_moves(tmp_path):
    """num_iterations=2: a step's rollouts (sampled once) make two optimizer steps. At the first
    the policy is the one that sampled, so each token's ratio against its sampling log-probability
    is 1 up to float rounding (the trained ids are the sampled ids, scored under the sampling
    temperature); at the second the policy has moved and so has the ratio. The reward is a function
    of the test's own (objective.reward's _target_): the untrained model answers nothing zero-shot,
    so the task's score would tie every group."""
    summary = train(grpo_config(tmp_path / "run", "objective.num_iterations=2", "trainer.max_steps=2", "optimizer.lr=1e-2",
                                "format=chat", "~objective.reward", f"+objective.reward={{_target_:{__name__}.CompletionLength}}"))
    first, second = summary["step_metrics"]
    assert summary["optimizer_steps"] == 2
    assert len(read_jsonl(tmp_path / "run" / "rollouts.jsonl")[0]) == 4  # 2 questions x 2, sampled once
    assert first["rollout_seconds"] == second["rollout_seconds"] and first["reward"] == second["reward"]
    assert abs(first["ratio"] - 1) < 1e-3
    assert abs(second["ratio"] - 1) > 10 * abs(first["ratio"] - 1)
    assert (tmp_path / "run" / "step_metrics.png").stat().st_size > 0  # the curves, beside the summary


def test_grpo_runs_search_r1s_protocol_against_a_retrieval_server(tmp_path):
    """Search-R1's RL recipe: the policy prompted with its instruction and tags (format=search_r1,
    method=search_r1), searching a real retrieval server; each rollout's trace is token in, token out."""
    from fireact.paths import REPO_ROOT
    from fireact.retriever.corpus import Passage, write_corpus
    from fireact.retriever.process import serving
    from fireact.child_server import free_port

    corpus = tmp_path / "corpus.jsonl"
    write_corpus(corpus, [Passage("0", "Arthur's Magazine\nArthur's Magazine (1844-1846) was a literary periodical.")])
    env = {"FIREACT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(REPO_ROOT / "src")}
    with serving(free_port(), corpus, [f"hydra.run.dir={tmp_path / 'server'}"], env) as url:
        summary = train(grpo_config(tmp_path / "run", "trainer.max_steps=1", "format=search_r1",
                                    "method@objective.rollout.method=search_r1", "objective.rollout.method.max_rounds=2",
                                    "objective.rollout.method.max_tokens=24", "tool@objective.rollout.tool=retriever",
                                    f"objective.rollout.tool.tool.url={url}/retrieve", "objective.rollout.tool.cache=false"))
    assert summary["optimizer_steps"] == 1 and 1 <= summary["turns_mean"] <= 2
    rollouts, _ = read_jsonl(tmp_path / "run" / "rollouts.jsonl")
    assert len(rollouts) == 4 and {t.method for t in rollouts} == {"search_r1"}
    assert all(t.tokens.format == "search_r1" and t.tokens.sampled for t in rollouts)
