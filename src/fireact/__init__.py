"""fireact: fine-tuning language agents."""

from omegaconf import OmegaConf

from fireact.logs import route_library_output
from fireact.run_folder import folder_name
from fireact.stage_help import stage_help

route_library_output()
# conf/hydra/default.yaml names a run's folder and writes a stage's --help with them.
OmegaConf.register_new_resolver("run_folder", folder_name, replace=True)
OmegaConf.register_new_resolver("stage_help", stage_help, replace=True)
