"""Every `>>>` example in the `gaussjax` package runs and prints what its docstring says.

The examples are contracts a reader copies: one that no longer runs is a bug. Each module's
docstrings are collected with `doctest.DocTestFinder` and run with their module's globals;
`+SKIP` is refused (an example is cheap enough to run, or it is prose).
"""

import doctest
import importlib
import pkgutil

import pytest

import gaussjax

OPTIONS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _modules() -> list[str]:
    names = [gaussjax.__name__]
    for info in pkgutil.walk_packages(gaussjax.__path__, prefix=f"{gaussjax.__name__}."):
        names.append(info.name)
    return sorted(names)


def _tests() -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    tests = []
    for name in _modules():
        module = importlib.import_module(name)
        tests += [test for test in finder.find(module, name) if test.examples]
    return tests


def test_every_example_runs_and_passes():
    tests = _tests()
    skipped = [f"{test.name} (line {test.lineno + example.lineno + 1})" for test in tests
               for example in test.examples if example.options.get(doctest.SKIP)]
    assert not skipped, f"`# doctest: +SKIP` examples do not run; make them run or prose: {skipped}"
    runner = doctest.DocTestRunner(optionflags=OPTIONS)
    failed = []
    for test in tests:
        result = runner.run(test, out=lambda text: failed.append(text))
        if result.failed:
            failed.append(f"-> {test.name}: {result.failed} of {result.attempted} examples failed")
    attempted = sum(len(test.examples) for test in tests)
    assert not failed, "\n".join(failed)
    # gaussjax.checks has 3 examples of its own, the quality, data and teleportation modules more.
    assert attempted > 3
    names = {test.name.split(".")[1] for test in tests if "." in test.name}
    assert {"checks", "quality", "teleportation", "data"} <= names, names


@pytest.mark.parametrize("name", ["gaussjax.checks", "gaussjax.quality._stats", "gaussjax.teleportation"])
def test_the_runner_finds_the_examples_of(name):
    finder = doctest.DocTestFinder(exclude_empty=True)
    assert sum(len(test.examples) for test in finder.find(importlib.import_module(name), name)) > 0
