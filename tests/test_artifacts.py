"""explainers/artifacts.py: every artifact kind carries a format version, and one read_meta checks it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from explainers.artifacts import FORMAT_VERSIONS, META, read_meta, write_meta


@pytest.mark.parametrize("kind", sorted(FORMAT_VERSIONS))
def test_every_kind_is_written_with_its_version_and_read_back(tmp_path: Path, kind: str) -> None:
    meta = write_meta(tmp_path, kind, name="x")
    assert meta["format_version"] == FORMAT_VERSIONS[kind]
    assert read_meta(tmp_path, kind)["format_version"] == FORMAT_VERSIONS[kind]


@pytest.mark.parametrize("kind", sorted(FORMAT_VERSIONS))
def test_another_format_is_refused_saying_what_to_do(tmp_path: Path, kind: str) -> None:
    (tmp_path / META).write_text(json.dumps({"kind": kind, "format_version": 99}))
    with pytest.raises(
        ValueError, match=rf"{kind} format 99, this library reads (1|1 or 2); (rebuild it|recalibrate)"
    ):
        read_meta(tmp_path)


def test_unversioned_artifacts_of_the_kinds_that_had_none_still_load(tmp_path: Path) -> None:
    for kind in ("concept_space", "taggers", "classifier"):
        (tmp_path / META).write_text(json.dumps({"kind": kind}))
        assert read_meta(tmp_path, kind)["kind"] == kind
    for kind in ("domain", "calibration"):  # these always carried one: a missing version is refused
        (tmp_path / META).write_text(json.dumps({"kind": kind}))
        with pytest.raises(ValueError, match="format None"):
            read_meta(tmp_path, kind)


def test_a_resaved_artifact_keeps_its_own_version_field(tmp_path: Path) -> None:
    meta = write_meta(tmp_path, "calibration", format_version=1, name="kept")
    assert meta["format_version"] == 1 and meta["name"] == "kept"
