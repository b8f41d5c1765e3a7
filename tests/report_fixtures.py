"""A second rating model with tfidf-lr's labels, served over HTTP, for the comparison tests."""

from __future__ import annotations

from collections.abc import Iterator

import joblib
import pytest

from tests.servers import python, running

PORTS = iter(range(9600, 9610))  # this suite's range (9600-9699)


def dev_rows(n: int) -> list[dict]:
    from explainers.data.cebab import load_split

    seen: dict[str, dict] = {}
    for r in load_split("dev"):
        if r.text not in seen and r.review_majority:
            seen[r.text] = {"text": r.text, "y": r.review_majority}
        if len(seen) == n:
            break
    return list(seen.values())


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A second rating model with tfidf-lr's labels (a bag of words fit on 300 dev reviews), served over HTTP."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    rows = dev_rows(300)
    model = make_pipeline(CountVectorizer(min_df=2), LogisticRegression(max_iter=500, C=0.3))
    model.fit([r["text"] for r in rows], [r["y"] for r in rows])
    assert list(model.classes_) == ["1", "2", "3", "4", "5"]
    path = tmp_path_factory.mktemp("clf") / "bow.joblib"
    joblib.dump(model, path)
    port = next(PORTS)
    cmd = [python(), "-m", "explainers.serving", str(path), "--port", str(port)]
    with running(cmd, port=port, health_path="/health", timeout=120) as srv:
        yield srv.base_url + "/predict"
