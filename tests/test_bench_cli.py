"""`cace bench cebab` end to end on a small stratified run, with a small pool file and a test-split path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explainers.bench.cebab import build_pairs, load_split, split_path
from explainers.bench.cli import main
from explainers.bench.runner import select_pairs, true_icaces

EXPLAINERS = ["zero", "conexp", "random_matching", "approx", "s_learner"]


@pytest.fixture(scope="module")
def small_files(tmp_path_factory) -> tuple[Path, Path]:
    """A 400-review pool file (from train_inclusive) and a 'test' split file (dev originals and their edits)."""
    d = tmp_path_factory.mktemp("cebab")
    rows = json.loads(split_path("train_inclusive").read_text())
    (d / "pool.json").write_text(json.dumps(rows[:400]))
    dev = json.loads(split_path("dev").read_text())
    origins = sorted({r["original_id"] for r in dev})[:60]
    (d / "test.json").write_text(json.dumps([r for r in dev if r["original_id"] in origins]))
    return d / "pool.json", d / "test.json"


def test_cli_small_run_writes_table_and_json(tfidf_lr_dir: Path, tfidf_lr, small_files, tmp_path: Path,
                                              capsys) -> None:
    pool, split = small_files
    out = tmp_path / "cebab_small.md"
    rc = main(["cebab", "--model", str(tfidf_lr_dir), "--split", str(split), "--pool", str(pool),
               "--explainers", ",".join(EXPLAINERS), "--k", "1,3", "--limit", "40", "--out", str(out)])
    assert rc == 0
    printed = capsys.readouterr().out
    table = out.read_text()
    assert table.strip() in printed.strip() or "| explainer | K |" in printed
    for name in EXPLAINERS:
        for k in (1, 3):
            assert f"| {name} | {k} |" in table
    data = json.loads(out.with_suffix(".json").read_text())
    assert len(data["rows"]) == len(EXPLAINERS) * 2
    assert data["config"]["n_pairs"] == 40

    # Zero's micro L2 is the mean norm of the true ICaCE, computed here independently.
    pairs = select_pairs(build_pairs(load_split(split)), 40, seed=0)
    truth = true_icaces(pairs, tfidf_lr)
    zero = next(r for r in data["rows"] if r["explainer"] == "zero")
    assert zero["micro"]["l2"] == pytest.approx(float(np.linalg.norm(truth, axis=1).mean()), rel=1e-9)
    assert zero["micro"]["cos"] == 1.0
    assert zero["n"] == 40
    # A method that uses the data should beat Zero on Cosine (Zero's is 1 by definition).
    conexp = next(r for r in data["rows"] if r["explainer"] == "conexp")
    assert conexp["macro"]["cos"] < 1.0


def test_cli_reports_unknown_explainer_without_failing_the_rest(tfidf_lr_dir: Path, small_files,
                                                                  capsys) -> None:
    pool, split = small_files
    rc = main(["cebab", "--model", str(tfidf_lr_dir), "--split", str(split), "--pool", str(pool),
               "--explainers", "zero,no_such_method", "--k", "1", "--limit", "10", "--no-write"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| zero | 1 |" in printed and "`no_such_method` not run" in printed


def test_cli_list(capsys) -> None:
    assert main(["list"]) == 0
    assert "approx_match" in capsys.readouterr().out
