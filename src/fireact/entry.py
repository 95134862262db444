"""How every stage starts: `python -m fireact.<stage> [overrides]` (installed: `fireact-<stage>`),
a Hydra main over conf/<stage>.yaml declared with `stage_main`. The module each command runs:

    generate     fireact/generate.py           build_data   fireact/build_data.py
    train        fireact/train/__main__.py     evaluate     fireact/evaluate/__main__.py
    pipeline     fireact/pipeline.py           report       fireact/report.py
    rescore      fireact/rescore.py

(train and evaluate are packages, so their main is the package's __main__.) Each main only
calls the stage's function, which takes the composed config: what the pipeline and tests call.
"""

import hydra

from fireact.paths import CONF_DIR


def stage_main(config_name: str):
    """The decorator of a stage's main: Hydra over conf/<config_name>.yaml."""
    return hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
