"""Benchmarks: scripts that measure the library and the service and write `benchmarks/results/`.

A package, run from the repository root as `python -m benchmarks.<name> [--help]`; the shared
harness (`benchmarks.harness`: where results go, the server launchers the tests use too) is
imported like any module, with no `sys.path` patching. Nothing at run time imports this package.
"""
