"""A stage's `--help`: what conf/<stage>.yaml says of itself (its opening comments: usage and
examples), the config groups it composes with their members, and its own keys with their
comments. The YAML comments are the documentation: this only puts them in front of the user.
conf/hydra/default.yaml makes it Hydra's help template, ${stage_help:${hydra.job.name}}."""

from __future__ import annotations

import yaml

from fireact.paths import CONF_DIR

NOT_SHOWN = {"hydra", "paths", "_self_"}  # where runs write: conf/hydra, conf/paths
FOOTER = """\
Exit codes: 0 done; 2 bad input (the line says which key and the fix); 3 a service down (the MLflow
store, an LLM server) or questions left to run (the line says the command that resumes); 130 Ctrl-C.
HYDRA_FULL_ERROR=1 shows the traceback. --cfg job prints the composed config; -m runs a sweep
(a,b,c per key). Each group's keys: conf/<group>/<member>.yaml."""


def stage_help(stage: str) -> str:
    text = (CONF_DIR / f"{stage}.yaml").read_text(encoding="utf-8")
    lines = text.splitlines()
    opening = [line.removeprefix("#").removeprefix(" ") for line in _until(lines, "defaults:") if line.startswith("#")]
    sections = ["\n".join(opening), "", "Groups (group=member; * the default):", *_groups(lines),
                "", f"Keys (conf/{stage}.yaml; key=value):", *_own_keys(lines), "", FOOTER]
    return "\n".join(sections).replace("$", "$$")  # Hydra fills the template with string.Template


def _until(lines: list[str], start: str) -> list[str]:
    return lines[:next((i for i, line in enumerate(lines) if line.startswith(start)), len(lines))]


def _groups(lines: list[str]) -> list[str]:
    """A row per group of the defaults list: its members, the default starred, and its comment."""
    rows = []
    for line in lines[len(_until(lines, "defaults:")) + 1:]:
        if not line.startswith("  - "):
            break
        entry, _, comment = line.removeprefix("  - ").partition("#")
        parsed = yaml.safe_load(entry)
        if not isinstance(parsed, dict):
            continue
        [(group, chosen)] = parsed.items()
        group = group.removeprefix("override ").lstrip("/")
        if group in NOT_SHOWN:
            continue
        members = sorted(path.stem for path in (CONF_DIR / group).glob("*.yaml"))
        shown = ", ".join(f"{m}*" if m == chosen else m for m in members)
        rows.append(f"  {group:<13} {shown}" + ("  (none by default)" if chosen is None else ""))
        if comment.strip():
            rows.append(f"  {'':<13} {comment.strip()}")
    return rows


def _own_keys(lines: list[str]) -> list[str]:
    """The lines after the defaults list, down to the `hydra:` block: the stage's keys and comments."""
    after = lines[len(_until(lines, "defaults:")):]
    body = after[next((i for i, line in enumerate(after[1:], 1) if not line.startswith((" ", "-"))), len(after)):]
    return ["  " + line for line in _until(body, "hydra:") if line.strip()]
