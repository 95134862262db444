"""Where the project's inputs and caches are found: its configs, the data folder and the model
cache (FIREACT_DATA_DIR / FIREACT_CACHE_DIR move them). Where a run writes is the Hydra `paths`
group's (conf/paths/default.yaml): one home each."""

import hashlib
import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
CONF_DIR = REPO_ROOT / "conf"  # the Hydra configs of every stage (fireact.entry)


def data_dir() -> Path:
    return Path(os.environ.get("FIREACT_DATA_DIR", REPO_ROOT / "data"))


def cache_dir() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "fireact"
    return Path(os.environ.get("FIREACT_CACHE_DIR", default))


def file_hash(path: str | Path) -> str:
    """16 hex digits of the SHA-256 of a file's content: what names a corpus or a set of files."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as data:
        for block in iter(lambda: data.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]
