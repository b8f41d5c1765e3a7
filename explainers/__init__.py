"""Causal concept explanations for black-box text classifiers.

The library behind the service: concept schemas and interventions, the `Classifier`
protocol and its endpoint adapters, the `Explainer` protocol and every method
(generate, match, baselines), the ICaCE/CaCE estimators and the CEBaB benchmark.
It never imports `app`.
"""

from explainers.concepts import CEBAB_SCHEMA, Concept, ConceptSchema, Intervention
from explainers.types import Cost, Counterfactual, Explainer, Explanation

__all__ = [
    "CEBAB_SCHEMA",
    "Concept",
    "ConceptSchema",
    "Counterfactual",
    "Cost",
    "Explainer",
    "Explanation",
    "Intervention",
]
