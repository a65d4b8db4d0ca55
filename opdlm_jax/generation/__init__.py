"""Shared decoding pieces: prompt batching, token sampling, stop handling, the AR decoder."""
