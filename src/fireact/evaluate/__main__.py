"""`python -m fireact.evaluate [overrides]`: the Hydra entry point (conf/evaluate.yaml)."""

import hydra
from omegaconf import DictConfig

from fireact.evaluate.run import evaluate


@hydra.main(config_path="../../../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float:
    return evaluate(cfg)["em"]


if __name__ == "__main__":
    main()
