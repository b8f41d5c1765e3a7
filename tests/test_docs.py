"""The README's settings table names every setting the service reads (it is the operator's reference)."""

from __future__ import annotations

from pathlib import Path

from app.settings import env_names

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_settings_table_lists_every_setting_and_where_it_is_in_settings() -> None:
    text = README.read_text()
    rows = {
        f"| `CACE_{flat.upper()}` | `{f'{group}.{name}' if group else name}` |"
        for flat, (group, name) in env_names().items()
    }
    missing = sorted(row for row in rows if row not in text)
    assert not missing, f"README settings table lacks (or misplaces) {missing}"
