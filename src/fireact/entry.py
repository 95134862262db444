"""How every stage starts: `python -m fireact.<stage> [overrides]` (installed: `fireact-<stage>`),
a Hydra main over conf/<stage>.yaml declared with `stage_main`. The module each command runs:

    generate     fireact/generate.py           build_data   fireact/build_data.py
    train        fireact/train/__main__.py     evaluate     fireact/evaluate/__main__.py
    pipeline     fireact/pipeline.py           report       fireact/report.py
    rescore      fireact/rescore.py            retriever    fireact/retriever/__main__.py

(train, evaluate and retriever are packages, so their main is the package's __main__.) Each main only
calls the stage's function, which takes the composed config: what the pipeline and tests call.
A single run in its default folder is linked as outputs/<entry point>/latest.
A stage that stops on bad input, an unreachable service or Ctrl-C says so in a line and exits
with its code (fireact.errors); HYDRA_FULL_ERROR=1 shows the traceback instead.
"""

import functools
import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode

from fireact.errors import INTERRUPTED_EXIT, Incomplete, exit_code, rerun_command, user_error
from fireact.paths import CONF_DIR
from fireact.run_folder import link_latest


def stage_main(config_name: str):
    """The decorator of a stage's main: Hydra over conf/<config_name>.yaml, stopping cleanly."""
    hydra_main = hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")

    def decorate(main):
        @functools.wraps(main)  # Hydra names the job after the module of the function it unwraps
        def stopping_cleanly(cfg):
            link_latest_run()
            try:
                return main(cfg)
            except KeyboardInterrupt:
                if os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                stop(INTERRUPTED_EXIT, "interrupted: what was written is kept; the same command resumes:\n"
                                       f"  {rerun_command()}")
            except Exception as raised:
                err = user_error(raised)
                code = exit_code(err)
                if code is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                    raise
                stop(code, f"error: {err}" + (f"\n  {rerun_command()}" if isinstance(err, Incomplete) else ""))

        return hydra_main(stopping_cleanly)

    return decorate


def link_latest_run() -> None:
    """outputs/<entry point>/latest -> this run's folder, for a single run in its default folder."""
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.RUN and run_dir.parent == Path.cwd() / "outputs" / hydra_cfg.job.name:
        run_dir.mkdir(parents=True, exist_ok=True)
        link_latest(run_dir)


def stop(code: int, message: str) -> None:
    sys.stderr.flush()
    print(message, file=sys.stderr)
    raise SystemExit(code)
