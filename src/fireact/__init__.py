"""fireact: fine-tuning language agents."""
