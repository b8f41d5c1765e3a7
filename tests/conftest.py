"""Shared fixtures: where test artifacts live, and the trained reference classifier; the test tiers.

Tiers (README, "Quickstart"): a test module that imports the process launchers (`benchmarks/harness/`:
servers.py, service.py, model_servers/) starts real servers, and every test in it is marked `server` here,
so nobody has to remember to; a test that starts another process by itself carries the mark
explicitly. `make test-fast` runs `-m "not server and not slow and not llm"`: in process, no
servers, no model loads beyond MiniLM.
"""

from __future__ import annotations

import os
import types
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


# Modules whose import marks a test module as one that starts servers.
LAUNCHERS = ("benchmarks.harness.servers", "benchmarks.harness.service", "benchmarks.harness.model_servers")


def _starts_servers(module: types.ModuleType) -> bool:
    for value in vars(module).values():
        origin = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
        if isinstance(origin, str) and origin.startswith(LAUNCHERS):
            return True
    return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark `server` every test of a module that imports the launchers (see the module doc)."""
    verdicts: dict[str, bool] = {}
    for item in items:
        module = getattr(item, "module", None)
        if module is None:
            continue
        if module.__name__ not in verdicts:
            verdicts[module.__name__] = _starts_servers(module)
        if verdicts[module.__name__]:
            item.add_marker(pytest.mark.server)
