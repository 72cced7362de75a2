"""Training and evaluation loops, checkpoints and process-group setup."""
