"""Observation noise for the robustness ablation (paper Table 3): clean, "None", random earlier.

`noise.apply(observation, key)` returns what the agent sees. The caller passes a key unique
per call of the form "<episode>/<round>", e.g. f"{qid}/{round}". Whether a call is noised
is decided by a hash of (seed, key), never by a shared random stream, so a run comes out
the same whatever order its threads make their calls in.

random_obs replaces an observation with one of the real observations that came earlier in
the same episode (the calls whose key has the same part before the last "/"), picked by a
second hash of (seed, key). An episode makes its calls in order, so this pool is the same in
every run, where a pool across episodes would depend on thread timing. The first call of an
episode has no earlier observation and keeps the real one, so the share of observations
replaced is p times the share of calls that are not an episode's first.
"""

from __future__ import annotations

import hashlib
import threading

NONE_OBSERVATION = "None"


def uniform(seed: int, salt: str, key: str) -> float:
    """A number in [0, 1) fixed by (seed, salt, key)."""
    digest = hashlib.sha256(f"{seed}\x00{salt}\x00{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


class Clean:
    """No noise: the observation as the tool gave it."""

    name = "clean"

    def apply(self, observation: str, key: str) -> str:
        return observation

    def end_episode(self, episode: str) -> None:
        """Called when an episode ends; noise that remembers observations forgets them."""

    def settings(self) -> dict:
        """What this noise was set up with (p, seed), not its working state (a lock, the episodes
        seen): what an evaluation's manifest records of it."""
        return {key: value for key, value in vars(self).items() if not key.startswith("_")}


class _Probabilistic(Clean):
    name: str

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"noise.p={p} is not a probability; set it between 0 and 1 (the paper used 0.5)")
        self.p = p
        self.seed = int(seed)

    def replaces(self, key: str) -> bool:
        return uniform(self.seed, self.name, key) < self.p


class NoneObservation(_Probabilistic):
    """With probability p the observation becomes "None", as if the search found nothing."""

    name = "none_obs"

    def apply(self, observation: str, key: str) -> str:
        return NONE_OBSERVATION if self.replaces(key) else observation


class RandomObservation(_Probabilistic):
    """With probability p the observation becomes a random earlier one of the same episode."""

    name = "random_obs"

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        super().__init__(p, seed)
        self._episodes: dict[str, dict[str, str]] = {}  # episode -> {key: real observation}, in call order
        self._lock = threading.Lock()

    def apply(self, observation: str, key: str) -> str:
        episode, slash, _ = key.rpartition("/")
        if not slash:
            raise ValueError(f"random_obs noise key {key!r} must be '<episode>/<round>', e.g. f'{{qid}}/{{round}}'")
        with self._lock:
            seen = self._episodes.setdefault(episode, {})
            keys = list(seen)
            # A key applied again (a retried round) sees only what came before its first call.
            earlier = [seen[k] for k in keys[: keys.index(key)]] if key in seen else list(seen.values())
            seen.setdefault(key, observation)
        if not earlier or not self.replaces(key):
            return observation
        return earlier[int(uniform(self.seed, "pick", key) * len(earlier))]

    def end_episode(self, episode: str) -> None:
        """Forget an episode's observations (optional; frees memory in long runs)."""
        with self._lock:
            self._episodes.pop(episode, None)
