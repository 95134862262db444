"""Build a fine-tuning set: `python -m fireact.build_data task_mix=multitask method_mix=react_cot n=500`.

Loads trajectories (`data_source`: the released FireAct sets by default, or our own JSONL),
mixes them by `task_mix` × `method_mix` (conf/build_data.yaml says how the ratios work),
writes trajectories.jsonl, alpaca.json, chat.jsonl and manifest.json to the run's folder
(or `out_dir=...`) and prints the counts per task × method.
"""

import hydra
from omegaconf import DictConfig

from fireact.data.build import build_from_config
from fireact.data.summary import print_summary


@hydra.main(version_base="1.3", config_path="../../conf", config_name="build_data")
def main(cfg: DictConfig) -> None:
    print_summary(build_from_config(cfg))


if __name__ == "__main__":
    main()
