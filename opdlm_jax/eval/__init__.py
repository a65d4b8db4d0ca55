"""Evaluation: distillation metrics (held-out KL, teacher NLL) and decoding quality."""
