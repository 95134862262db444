"""Build a fine-tuning set: `python -m fireact.build_data task_mix=multitask method_mix=react_cot n=500`.

Loads trajectories (`data_source`: the released FireAct sets by default, or our own JSONL),
mixes them by `task_mix` × `method_mix` (conf/build_data.yaml says how the ratios work),
writes trajectories.jsonl, alpaca.json, chat.jsonl and manifest.json to the run's folder
(or `output_dir=...`) and prints the counts per task × method. With `pairs_per_question=k`,
sampled successes and failures also become DPO pairs: pairs.jsonl and preference.jsonl.
"""

from pathlib import Path

from omegaconf import DictConfig

from fireact import tracking
from fireact.data.build import BuildResult, build_from_config
from fireact.data.export import MANIFEST, TRAJECTORIES
from fireact.data.mix import count_cells
from fireact.data.pairs import PAIRS
from fireact.data.summary import print_summary
from fireact.entry import stage_main
from fireact.terminal import command, shown_path


def build_data(cfg: DictConfig) -> BuildResult:
    """Build the set and log it as one MLflow run (stage "build_data"): counts per task ×
    method as metrics, the manifest and the exports as artifacts. The build comes first, so
    bad ratios or data stop it before the run opens."""
    tracking.check(cfg)  # the tracking store first: down, nothing else is done
    result = build_from_config(cfg)
    with tracking.start_run(cfg, stage="build_data"):
        counts = {f"count_{task}_{method}": k for (task, method), k in count_cells(result.trajectories).items()}
        tracking.log_metrics({"n_trajectories": len(result.trajectories), "n_pairs": len(result.pairs), **counts})
        if result.out_dir is not None:
            for name in (MANIFEST, TRAJECTORIES, PAIRS):
                if (result.out_dir / name).exists():
                    tracking.log_artifact(result.out_dir / name)
    print_summary(result)
    return result


def built(folder: Path) -> bool:
    """Whether `folder` holds a finished build (its manifest is written last)."""
    return (folder / MANIFEST).exists()


@stage_main("build_data")
def main(cfg: DictConfig) -> None:
    result = build_data(cfg)
    if result.out_dir is not None:
        data = f"data.path={shown_path(result.out_dir)}"
        print(f"next: {command('fireact.train', data, 'data.limit=null')}")
        if result.pairs:
            print(f"  or: {command('fireact.train', 'objective=dpo', 'data=preference', data, 'model.path=SFT_MODEL')}")


if __name__ == "__main__":
    main()
