"""Shared helpers for tests, benchmarks and the demo: small synthetic PSF fields and toy pair datasets
(no downloads; everything is generated from a seed)."""
