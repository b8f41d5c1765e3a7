"""What `cace classifiers serve` loads: artifact dirs, joblib files, reference names."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from explainers.serving import load_classifier


def test_load_by_artifact_dir_file_and_reference_name(
    tfidf_lr_dir: Path, test_data_dir: Path, tfidf_lr
) -> None:
    texts = ["great food, rude waiter", "quiet and cosy"]
    want = tfidf_lr.predict_proba(texts)
    for ref, root, name in [
        (str(tfidf_lr_dir), None, "tfidf-lr"),
        (str(tfidf_lr_dir / "model.joblib"), None, "model"),
        ("tfidf-lr", test_data_dir, "tfidf-lr"),
    ]:
        clf, got_name = load_classifier(ref, root)
        assert got_name == name and clf.labels == ["1", "2", "3", "4", "5"]
        np.testing.assert_allclose(clf.predict_proba(texts), want)


def test_unknown_reference_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="neither a classifier artifact directory"):
        load_classifier(str(tmp_path / "missing"))
