"""Agents: prompt formats, reply parsing, the four methods and the batched rollout loop."""
