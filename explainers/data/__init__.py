"""Corpora a domain can be built from (CEBaB's loader lives in explainers.data.cebab)."""
