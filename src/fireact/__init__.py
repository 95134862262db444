"""fireact: fine-tuning language agents."""

from fireact.logs import route_library_output

route_library_output()
