"""Weight dtypes by name: the one table behind every setting that names one (backend.dtype,
finetune.dtype, finetune.compute_dtype)."""

import torch

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def torch_dtype(name: str, setting: str, also: tuple[str, ...] = ()) -> torch.dtype:
    """The dtype called `name`; a clear error naming `setting` (e.g. "finetune.dtype") otherwise.
    `also`: other values the setting takes, which its owner resolves first (e.g. "auto")."""
    if name not in DTYPES:
        raise ValueError(f"{setting} must be one of {[*also, *sorted(DTYPES)]}, got {name!r}")
    return DTYPES[name]
