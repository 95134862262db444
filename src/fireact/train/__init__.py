"""Fine-tuning: LightningModule and DataModule over trajectories, LoRA/QLoRA/full, OpenAI jobs.

Entry point: `python -m fireact.train` (fireact.train.run.main, Hydra config conf/train.yaml),
installed as `fireact-train`. Programmatic: fireact.train.run.train(cfg).
"""
