"""The pipeline's one config tree (conf/pipeline.yaml): the stages' groups at top level, the LM's
preset following model=, and each stage's part (fireact.pipeline.stage_config) as the stage
would run it. Compose only: no runs."""


import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

from fireact.pipeline import stage_config
from fireact.train.result import TrainedModel
from tests.conftest import CONF_DIR


@pytest.fixture
def pipeline_cfg():
    """compose(overrides) of conf/pipeline.yaml, with Hydra left initialised for stage_config."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        yield lambda *overrides: compose(config_name="pipeline", overrides=list(overrides))
    GlobalHydra.instance().clear()


def test_every_model_has_its_preset():
    """`lm: ${model}` picks conf/lm/<model>.yaml: a model without one cannot run in the pipeline."""
    models = {p.stem for p in (CONF_DIR / "model").glob("*.yaml")}
    assert models == {p.stem for p in (CONF_DIR / "lm").glob("*.yaml")}


def test_a_model_brings_its_preset_and_the_command_line_still_wins(pipeline_cfg, tmp_path):
    cfg = pipeline_cfg("model=llama2_7b", "optimizer.lr=1e-4", "questions=500")
    train = stage_config(cfg, "train", tmp_path, {"data": {"path": "/data"}})
    assert train.model.path == "meta-llama/Llama-2-7b-chat-hf" and train.trainer.accelerator == "gpu"
    assert train.finetune._target_.endswith("LoraFinetune") and train.finetune.dtype == "bfloat16"
    assert train.optimizer.lr == 1e-4  # the preset's 3e-4, overridden
    assert train.data.path == "/data" and train.data.limit is None and train.seed == 0
    evaluate = stage_config(cfg, "evaluate", tmp_path)
    assert evaluate.backend._target_.endswith("VLLMBackend") and evaluate.task.n == 500
    assert pipeline_cfg("model=llama2_7b").optimizer.lr == 3e-4
    hosted = stage_config(pipeline_cfg("model=gpt35"), "train", tmp_path)
    assert hosted.finetune._target_.endswith("OpenAIFinetune") and hosted.data.format._target_.endswith("Chat")


def test_a_stage_gets_only_its_own_keys_and_follows_a_changed_model(pipeline_cfg, tmp_path):
    cfg = pipeline_cfg("noise=none_obs", "method.max_rounds=3", "+replace=true")
    evaluate = stage_config(cfg, "evaluate", tmp_path / "eval", TrainedModel({"model": "/base", "outputs": {"adapter": "/a"}}).agent())
    assert evaluate.backend.model.path == "/base" and evaluate.backend.model.adapter == "/a"  # ${model} followed the change
    assert evaluate.noise._target_ == "fireact.tools.noise.NoneObservation"
    assert evaluate.method.max_rounds == 3 and evaluate.output_dir == str(tmp_path / "eval")
    assert "n" not in evaluate and "data" not in evaluate and "prompted" not in evaluate
    build = stage_config(cfg, "build_data", tmp_path / "data")
    assert build.n == 100 and build.replace is True and "model" not in build
    assert "tracker" not in stage_config(pipeline_cfg("~tracker"), "train", tmp_path)


def test_an_improve_step_is_a_part_merged_over_the_pipelines(pipeline_cfg, tmp_path):
    cfg = pipeline_cfg("experiment=sft_vs_rl", "improve=dpo")
    start = {"model": {"path": "/sft"}}
    sample = stage_config(cfg, "generate", tmp_path / "sample", start, cfg.improve.sample)
    assert sample.task.split == "train" and sample.task.n == 300 and sample.samples == 4
    assert sample.backend.temperature == 0.7 and sample.backend.model.path == "/sft"
    assert sample.method.max_rounds == 6  # prompted as it is evaluated (the CPU recipe's rounds)
    dpo = stage_config(cfg, "train", tmp_path / "dpo", start, cfg.improve.train, {"data": {"path": "/samples"}})
    assert dpo.objective._target_.endswith("DPO") and dpo.data._target_.endswith("PreferenceDataModule")
    assert dpo.data.path == "/samples" and dpo.data.format._target_.endswith("Alpaca")
    assert dpo.finetune._target_ == "fireact.train.peft_setup.FullFinetune"
    assert dpo.optimizer.lr == 1e-5 and dpo.trainer.max_epochs == 1  # the step's, over the recipe's 1e-4 and 2
    grpo_cfg = pipeline_cfg("experiment=sft_vs_rl", "improve=grpo")
    grpo = stage_config(grpo_cfg, "train", tmp_path / "grpo", start, grpo_cfg.improve.train)
    rollout = grpo.objective.rollout
    assert rollout.method.max_rounds == 6 and rollout.method._partial_ and grpo.data.task.n == 120
    assert rollout.temperature == 0.7 and grpo.objective.group_size == 4 and grpo.finetune.gradient_checkpointing is True
    OmegaConf.to_container(grpo, resolve=True)
