"""Training: the loop, EMA, checkpoints (safetensors + JSON), resume, run directories."""
