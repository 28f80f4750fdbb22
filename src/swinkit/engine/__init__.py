"""Fine-tuning and evaluation: typed config, optimiser recipe, checkpoints, distributed training, metrics."""
