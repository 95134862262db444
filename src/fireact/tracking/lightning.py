"""`logger=mlflow` for Lightning (the train entry point): training curves into the stage's run
(the tracker's, conf/tracker/mlflow.yaml).

Kept apart from fireact.tracking so that importing tracking does not import torch.
"""

from __future__ import annotations

import os
from argparse import Namespace
from typing import Any

from lightning_fabric.utilities.logger import _convert_params, _flatten_dict
from pytorch_lightning.loggers import MLFlowLogger as LightningMLFlowLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from fireact.tracking.run import active_run, local_store_uri, secondary_rank
from fireact.secrets import Redactor


class MLflowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger writing into the run `tracking.start_run` holds open, so the
    curves sit beside the run's config, params and artifacts. Lightning marks the run finished
    when fitting ends; the `start_run` block can still log to it and ends it itself. Only the
    first process of a multi-process job logs (the others hold no run and log nothing).
    """

    def __init__(self, log_model: bool = False, prefix: str = ""):
        run = active_run()
        if run is None and not secondary_rank():
            raise ValueError("logger=mlflow writes the training curves into the stage's MLflow run, but tracking "
                             "is off (~tracker): use logger=csv, or keep tracker=mlflow")
        super().__init__(
            # A secondary process logs nothing, but Lightning's logger opens a client all the same:
            # at the store the first process uses, not Lightning's default file store (which MLflow refuses).
            tracking_uri=run.uri if run else (os.environ.get("MLFLOW_TRACKING_URI") or local_store_uri()),
            run_id=run.run_id if run else None,
            log_model=log_model,
            prefix=prefix,
        )
        self._redactor = run.redactor if run else Redactor.for_config()

    @rank_zero_only
    def log_hyperparams(self, params: dict[str, Any] | Namespace) -> None:
        """The LightningModule's hyperparameters as `hparams/<name>` (apart from the config's
        params, which may not change once logged), secrets masked."""
        flat = _flatten_dict(_convert_params(params))
        super().log_hyperparams(self._redactor.tree({f"hparams/{k}": str(v) for k, v in flat.items()}))
