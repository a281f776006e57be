"""User-facing errors: one clear line, a non-zero exit, nothing lost."""


class UserError(Exception):
    """An error caused by input or environment; printed as one line, exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code
