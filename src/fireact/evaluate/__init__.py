"""Evaluation: run an agent over a task's questions, score, summarise (`python -m fireact.evaluate`)."""
