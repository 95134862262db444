"""`python -m fireact.evaluate [overrides]`: one agent over one task (conf/evaluate.yaml; the
work is fireact.evaluate.run.evaluate)."""

from omegaconf import DictConfig

from fireact.entry import stage_main
from fireact.evaluate.run import evaluate


@stage_main("evaluate")
def main(cfg: DictConfig) -> float:
    """The agent's EM: the objective a sweeper maximises."""
    return evaluate(cfg)["em"]


if __name__ == "__main__":
    main()
