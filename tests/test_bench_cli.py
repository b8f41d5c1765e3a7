"""`cace bench cebab` end to end on a small stratified run, with a small pool file and a test-split path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from explainers.artifacts import META
from explainers.bench.cli import main
from explainers.bench.runner import select_pairs, true_icaces
from explainers.data.cebab import build_pairs, load_split, split_path

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


def test_cli_small_run_writes_table_and_json(
    tfidf_lr_dir: Path, tfidf_lr, small_files, tmp_path: Path, capsys
) -> None:
    pool, split = small_files
    out = tmp_path / "cebab_small.md"
    rc = main(
        [
            "cebab",
            "--model",
            str(tfidf_lr_dir),
            "--split",
            str(split),
            "--pool",
            str(pool),
            "--explainers",
            ",".join(EXPLAINERS),
            "--k",
            "1,3",
            "--limit",
            "40",
            "--out",
            str(out),
        ]
    )
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


def test_cli_unknown_explainer_is_an_error_before_scoring(
    tfidf_lr_dir: Path, small_files, tmp_path: Path, capsys
) -> None:
    pool, split = small_files
    out = tmp_path / "never.md"
    rc = main(
        [
            "cebab",
            "--model",
            str(tfidf_lr_dir),
            "--split",
            str(split),
            "--pool",
            str(pool),
            "--explainers",
            "zero,no_such_method",
            "--k",
            "1",
            "--limit",
            "10",
            "--out",
            str(out),
        ]
    )
    assert rc == 2
    assert "no_such_method" in capsys.readouterr().err
    assert not out.exists()


def test_cli_option_no_requested_method_takes_is_an_error_before_scoring(
    tfidf_lr_dir: Path, small_files, tmp_path: Path, capsys
) -> None:
    pool, split = small_files
    out = tmp_path / "never.md"
    argv = ["cebab", "--model", str(tfidf_lr_dir), "--split", str(split), "--pool", str(pool)]
    rc = main([*argv, "--explainers", "zero,conexp", "--option", "relax=nonempty", "--out", str(out)])
    assert rc == 2
    assert "relax" in capsys.readouterr().err
    assert not out.exists()


@pytest.fixture(scope="module")
def small_space(small_files, tmp_path_factory) -> Path:
    """A pretrained-encoder space (no heads) over the small pool file, saved like any trained space."""
    from explainers.data.pools import cebab_pool
    from explainers.embeddings import Encoder
    from explainers.matching.space import ConceptSpace

    pool_file, _ = small_files
    space = ConceptSpace(cebab_pool(pool_file), Encoder(), meta={"name": "small-test-space"})
    space.build_indices()
    out = tmp_path_factory.mktemp("spaces") / "small-test-space"
    space.save(out, name="small-test-space")
    return out


def test_cli_space_resource_is_loaded_and_each_row_names_its_space(
    tfidf_lr_dir: Path, small_files, small_space, tmp_path: Path, capsys
) -> None:
    pool, split = small_files
    out = tmp_path / "spaces.md"
    rc = main(
        [
            "cebab",
            "--model",
            str(tfidf_lr_dir),
            "--split",
            str(split),
            "--pool",
            str(pool),
            "--explainers",
            "match,pair_transfer,stacked,pt_match,conexp",
            "--k",
            "2",
            "--limit",
            "20",
            "--resource",
            f"space={small_space}",
            "--out",
            str(out),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    table = out.read_text()
    assert "| match | 2 | small-test-space |" in table
    assert "| pair_transfer | 2 | small-test-space |" in table
    assert "| stacked | 2 | small-test-space |" in table
    assert "| pt_match | 2 | pretrained encoder" in table
    assert "| conexp | 2 | - |" in table
    # The stack's weights are printed with the table (none are fit for this classifier on this space: equal).
    assert "`stacked` used:" in table and '"weights"' in table and "equal weights" in table
    data = json.loads(out.with_suffix(".json").read_text())
    assert {r["space"] for r in data["rows"] if r["explainer"] == "match"} == {"small-test-space"}


def test_cli_space_none_makes_a_space_method_an_error(tfidf_lr_dir: Path, small_files, capsys) -> None:
    pool, split = small_files
    rc = main(
        [
            "cebab",
            "--model",
            str(tfidf_lr_dir),
            "--split",
            str(split),
            "--pool",
            str(pool),
            "--explainers",
            "match",
            "--k",
            "1",
            "--limit",
            "5",
            "--resource",
            "space=none",
            "--no-write",
        ]
    )
    assert rc == 2
    assert "match" in capsys.readouterr().err


def test_cli_missing_space_path_is_an_error(tfidf_lr_dir: Path, small_files, tmp_path: Path) -> None:
    pool, split = small_files
    with pytest.raises(SystemExit, match="no concept space"):
        main(
            [
                "cebab",
                "--model",
                str(tfidf_lr_dir),
                "--split",
                str(split),
                "--pool",
                str(pool),
                "--explainers",
                "match",
                "--k",
                "1",
                "--limit",
                "5",
                "--resource",
                f"space={tmp_path / 'nope'}",
                "--no-write",
            ]
        )


def test_cli_list(capsys) -> None:
    assert main(["list"]) == 0
    assert "approx_match" in capsys.readouterr().out


@pytest.mark.slow  # a whole calibration and benchmark run
def test_cace_calibrate_writes_a_calibration_the_bench_auto_uses(
    tfidf_lr_dir: Path, small_files, small_space, tmp_path: Path, capsys
) -> None:
    from app.cli import main as cace

    out = tmp_path / "cal"
    rc = cace(
        [
            "calibrate",
            "--classifier",
            str(tfidf_lr_dir),
            "--space",
            str(small_space),
            "--out",
            str(out),
            "--ks",
            "1,2",
            "--methods",
            "match,pair_transfer,s_learner,conexp",
            "--combiners",
            "ridge",
        ]
    )
    assert rc == 0
    printed = capsys.readouterr().out
    assert "| single:match@1 |" in printed and "fingerprint" in printed
    meta = json.loads((out / META).read_text())
    assert meta["kind"] == "calibration" and meta["classifier"]["name"] == "tfidf-lr"
    pool, split = small_files
    table_out = tmp_path / "auto.md"
    rc = main(
        [
            "cebab",
            "--model",
            str(tfidf_lr_dir),
            "--split",
            str(split),
            "--pool",
            str(pool),
            "--explainers",
            "auto",
            "--k",
            "2",
            "--limit",
            "10",
            "--resource",
            f"space={small_space}",
            "--resource",
            f"calibration={out}",
            "--out",
            str(table_out),
        ]
    )
    assert rc == 0
    table = table_out.read_text()
    assert "| auto | 2 | small-test-space |" in table and '"calibrated": true' in table
