"""Training: data, networks, loss, loop, checkpoints."""
