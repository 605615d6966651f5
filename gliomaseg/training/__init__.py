"""Training: samples, augmentation, loss, the loop, validation during training, tuning a run's post-processing."""
