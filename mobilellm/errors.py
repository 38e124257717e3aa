"""One exception type for user errors: the CLI prints its message and exits non-zero, no traceback."""


class UserError(Exception):
    """Bad input from the user (unknown name, malformed file, impossible combination).

    The message must name the problem and, where there is a list, the valid choices."""

    exit_code = 2


class VerificationError(UserError):
    """An artifact does not compute what the PyTorch model computes."""

    exit_code = 3
