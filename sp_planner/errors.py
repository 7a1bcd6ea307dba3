"""User-facing errors. The CLIs turn these into one line on stderr and exit code 2."""


class UserInputError(ValueError):
    """Bad input from the user: a wrong name, a malformed file, an impossible degree."""
