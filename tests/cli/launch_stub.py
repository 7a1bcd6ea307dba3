"""A stand-in for starting ranks: sp-run and sp-calibrate raise Launched where they would launch
(tests/cli/conftest.py no_launches). A module of its own, so that tests and the conftest fixture
share one class (pytest imports conftest.py under another module name)."""


class Launched(Exception):
    """The command accepted its input and would now start ranks."""


def launch_stub(*args, **kwargs):
    raise Launched
