"""Shared fixtures: where test artifacts live, and the trained reference classifier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Artifacts trained by tests are kept between runs on one machine (a fresh clone trains anew).
TEST_DATA_DIR = Path(os.environ.get("CACE_TEST_DATA_DIR", ROOT / "var" / "test"))

# Keep torch from oversubscribing the 2-core CI machine while servers run beside pytest.
os.environ.setdefault("OMP_NUM_THREADS", "2")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def test_data_dir() -> Path:
    TEST_DATA_DIR.mkdir(parents=True, exist_ok=True)
    return TEST_DATA_DIR


@pytest.fixture(scope="session")
def tfidf_lr_dir(test_data_dir: Path) -> Path:
    from explainers.reference import ensure_reference

    return ensure_reference("tfidf-lr", test_data_dir)


@pytest.fixture(scope="session")
def tfidf_lr(tfidf_lr_dir: Path):
    from explainers.reference import load_reference

    return load_reference(tfidf_lr_dir)
