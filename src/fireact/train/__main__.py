"""`python -m fireact.train [overrides]`: fine-tune a causal LM on agent trajectories
(conf/train.yaml; the work is fireact.train.run.train)."""

import logging

from omegaconf import DictConfig, OmegaConf

from fireact.entry import stage_main
from fireact.train.run import train

log = logging.getLogger("fireact.train.run")


@stage_main("train")
def main(cfg: DictConfig) -> None:
    log.info("config:\n%s", OmegaConf.to_yaml(cfg))
    train(cfg)


if __name__ == "__main__":
    main()
