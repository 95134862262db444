"""Fine-tuning: LightningModule and DataModule over trajectories, LoRA/QLoRA/full, OpenAI jobs.

Entry point: `python -m fireact.train` (fireact/train/__main__.py, Hydra config conf/train.yaml).
Programmatic: fireact.train.run.train(cfg).
"""
