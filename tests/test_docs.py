"""The README's settings table names every setting the service reads (it is the operator's reference)."""

from __future__ import annotations

from pathlib import Path

from app.settings import Settings

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_lists_every_setting() -> None:
    text = README.read_text()
    missing = [name for name in Settings.model_fields if f"| `CACE_{name.upper()}` |" not in text]
    assert not missing, f"README settings table lacks {missing}"
