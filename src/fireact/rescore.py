"""`python -m fireact.rescore [files=[PATH,...]] [task=...] [task.n=...]`: re-score trajectory
files over a stated question set (conf/rescore.yaml; the work is fireact.evaluate.rescore)."""

from omegaconf import DictConfig

from fireact.entry import stage_main
from fireact.evaluate.rescore import run


@stage_main("rescore")
def main(cfg: DictConfig) -> float:
    """The first file's EM: the objective a sweeper maximises."""
    return next(iter(run(cfg).values()))["em"]


if __name__ == "__main__":
    main()
