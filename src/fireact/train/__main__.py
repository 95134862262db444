"""`python -m fireact.train [overrides]`: fine-tune a causal LM on agent trajectories
(conf/train.yaml; the work is fireact.train.run.train). The composed config is in the run
folder's .hydra/config.yaml and the MLflow run's config.yaml."""

from omegaconf import DictConfig

from fireact.entry import stage_main
from fireact.train.result import TrainedModel
from fireact.train.run import train


@stage_main("train")
def main(cfg: DictConfig) -> None:
    summary = train(cfg)
    if summary.get("outputs"):  # the process that exported the weights
        print(f"next: {TrainedModel(summary).evaluate_command()}")


if __name__ == "__main__":
    main()
