"""Launch scripts and configs for the real model servers the adapter tests talk to."""
