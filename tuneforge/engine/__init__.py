"""The training engine: methods (LoRA, T-Few), the training loop, evaluation, checkpoints, weights.

Importing this package imports torch; the CLI imports it only inside commands that train or generate.
"""
