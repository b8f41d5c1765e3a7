"""One contract every registered explainer honours (scikit-learn's `check_estimator`, for explainers).

Each name in the registry is built from a small domain made by the service's own build path
(movie reviews, explainers.data.movies) and must: explain a text into an `Explanation` over the
classifier's labels (finite ICaCE, base + ICaCE still a probability vector for methods that
average predictions), return at most K counterfactuals, report what it cost, and give the same
answer twice (seeded). `generate` runs on llama.cpp in-process with the test model.
"""

from __future__ import annotations

import numpy as np
import pytest

from explainers.classifiers.local import SklearnClassifier
from explainers.concepts import CEBAB_SCHEMA, Intervention
from explainers.data.movies import movie_corpus, train_rating_classifier
from explainers.domains import Domain, build_domain, infer_schema, pool_from_rows, validate_rows
from explainers.embeddings import Encoder
from explainers.errors import UnknownOption
from explainers.registry import Resources, allowed_options, available, build_explainer, options_for
from explainers.types import Explanation, Lifecycle
from tests.llama_setup import GGUF, require_llama_setup

TEXT = "I went with two friends. The acting is wooden and flat. The story is gripping from start to finish."
INTERVENTION = Intervention("plot", "bad", "good")


@pytest.fixture(scope="module")
def domain(tmp_path_factory: pytest.TempPathFactory) -> Domain:
    rows = validate_rows(movie_corpus(25, seed=4))
    return build_domain(
        tmp_path_factory.mktemp("domains"),
        "contract",
        pool_from_rows(rows, infer_schema(rows)),
        encoder=Encoder(),
    )


@pytest.fixture(scope="module")
def classifier() -> SklearnClassifier:
    return SklearnClassifier(train_rating_classifier(movie_corpus(60, edits=False, seed=9)), name="rating")


def llm_backend() -> object:
    require_llama_setup(server=False)  # in process: the model file only
    from explainers.generation.backends import build_backend

    return build_backend(
        {"kind": "llamacpp", "model": "smollm2", "model_path": str(GGUF), "n_ctx": 1024, "n_threads": 2}
    )


@pytest.mark.parametrize("name", sorted(available()))
def test_an_undeclared_option_is_refused_naming_the_method_and_the_allowed_keys(name: str) -> None:
    allowed = sorted(allowed_options(name))
    with pytest.raises(UnknownOption) as refused:
        build_explainer(name, Resources(schema=CEBAB_SCHEMA), aggregaton="median")  # a typo, say
    assert repr(name) in str(refused.value) and str(allowed) in str(refused.value)
    assert options_for(name, {"aggregaton": "median", **dict.fromkeys(allowed, 1)}) == dict.fromkeys(
        allowed, 1
    )


@pytest.mark.parametrize(
    "name",
    # generate loads a llama.cpp model in process: not for the fast tier
    [pytest.param(n, marks=pytest.mark.llm) if n == "generate" else n for n in sorted(available())],
)
def test_every_registered_explainer_honours_the_contract(
    name: str, domain: Domain, classifier: SklearnClassifier
) -> None:
    resources = domain.resources(encoder=Encoder(), llm=llm_backend() if name == "generate" else None)
    options = {"max_tokens": 48} if name == "generate" else {}
    explainer = build_explainer(name, resources, **options)
    assert isinstance(getattr(explainer, "name", None), str)
    # The lifecycle (KServe's Model): built -> load() -> ready; close() at the end, both idempotent.
    assert isinstance(explainer, Lifecycle), f"{name} does not have the load/ready/close lifecycle"
    assert (explainer.state, explainer.ready) == ("new", False), name
    explainer.load()
    explainer.load()
    assert (explainer.state, explainer.ready) == ("ready", True), name
    for k in (1, 3):
        exp = explainer.explain(TEXT, INTERVENTION, classifier, top_k=k, base_labels=None)
        assert isinstance(exp, Explanation)
        assert exp.labels == classifier.labels and exp.icace.shape == (2,)
        assert np.all(np.isfinite(exp.icace)) and np.all(np.abs(exp.icace) <= 1.0 + 1e-9)
        assert exp.base_prediction.sum() == pytest.approx(1.0)
        assert len(exp.counterfactuals) <= k, (name, k, len(exp.counterfactuals))
        for cf in exp.counterfactuals:
            assert cf.text and cf.text != TEXT
        # What it cost: the first call scores at least the text; a method that caches predictions
        # (auto) may answer a second call from its cache.
        assert exp.cost.wall_time_s >= 0 and exp.cost.classifier_texts >= (1 if k == 1 else 0), exp.cost
        assert exp.intervention is None or exp.intervention.concept == "plot"
    if getattr(explainer, "nested_top_k", False):  # auto searches once at the widest K and cuts
        widest, details = explainer.counterfactuals(TEXT, INTERVENTION, 5)
        cut = explainer.explain_counterfactuals(TEXT, INTERVENTION, classifier, widest[:3], details)
        assert [c.text for c in cut.counterfactuals] == [c.text for c in exp.counterfactuals], name
        assert cut.icace == pytest.approx(exp.icace), name
    explainer.close()
    explainer.close()
    assert (explainer.state, explainer.ready) == ("closed", False), name
    # Never loaded: it still explains (doing the load's work on first use), the same as loaded.
    again = build_explainer(name, resources, **options).explain(TEXT, INTERVENTION, classifier, top_k=3)
    if name != "generate":  # a sampled LLM may word its rewrites differently on a second call
        assert again.icace == pytest.approx(exp.icace), name
