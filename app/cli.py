"""The `cace` command line: one entry point that hands each subcommand to its own module.

Each subcommand module owns its argparse (`module:function` names one of several commands in a
module), so the library's commands (bench, training)
live beside the code they run and this file stays a table.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("app.server", "run the explanation service (uvicorn)"),
    "settings": ("app.settings", "each CACE_* setting: its variable, its place in Settings, its value"),
    "bench": ("explainers.bench.cli", "run benchmarks, e.g. `cace bench cebab --model tfidf-lr`"),
    "classifiers": ("explainers.reference.cli", "train or serve the reference classifiers"),
    "taggers": ("explainers.taggers", "train or evaluate concept taggers"),
    "domains": (
        "explainers.domains.cli",
        "build, list, show or delete domains (schema, corpus, taggers, space)",
    ),
    "spaces": (
        "explainers.matching.cli",
        "train, list or delete concept spaces of the built-in corpus (benchmarks)",
    ),
    "generate": ("explainers.generation.cli", "generate counterfactuals with an LLM"),
    "explain": ("app.client:explain_main", "explain one text through a running service (or --in-process)"),
    "effects": ("app.client:effects_main", "CaCE over a file of texts through a running service"),
    "report": ("app.client:report_main", "a model report: every concept's effect, as JSON/CSV/Markdown/HTML"),
    "compare": (
        "app.client:compare_main",
        "compare two classifiers on the same counterfactuals; --max-shift makes it a CI gate",
    ),
    "calibrate": (
        "explainers.estimators.cli",
        "fit the auto estimator to a classifier on a domain's own pairs",
    ),
}


def export_settings() -> None:
    """Hand the service settings the library reads from the environment (data and cache folders)
    to the library's commands, so `cace domains list` looks where the service does (.env included)."""
    import os

    from app.settings import Settings

    s = Settings()
    os.environ["CACE_DATA_DIR"] = str(s.data_dir)
    if s.cache_dir is not None:
        os.environ["CACE_CACHE_DIR"] = str(s.cache_dir)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: cace COMMAND [ARGS...]\n\ncommands:")
        for name, (_, help_) in COMMANDS.items():
            print(f"  {name:<12} {help_}")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    if argv[0] != "serve":  # long CLI work shows progress (a bar on a terminal, periodic lines in a log)
        importlib.import_module("explainers.progress").enable()
        from app.settings import SettingsError

        try:
            export_settings()
        except SettingsError as e:  # fail closed, naming each bad variable
            print(f"cace {argv[0]}: {e}", file=sys.stderr)
            return 2
    # "module" runs module.main; "module:function" runs that function (several commands, one module).
    module_name, _, function = COMMANDS[argv[0]][0].partition(":")
    module = importlib.import_module(module_name)
    return int(getattr(module, function or "main")(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
