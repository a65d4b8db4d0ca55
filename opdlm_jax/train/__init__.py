"""Training: optimizer, train state and the fused OPD step."""
