"""The one exception type a user ever sees: a problem and how to fix it."""
from __future__ import annotations


class UserError(Exception):
    """A bad input or an impossible request, reported by the CLI as one line and exit code 2.

    `problem` says what is wrong (with the numbers), `fix` says what the user can do about it.
    """

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem
        self.fix = fix

    def __reduce__(self):
        # Exception pickles as cls(*args) = cls(message), which this __init__ cannot take; a UserError raised in a
        # worker process or Ray task has to cross back to the driver intact.
        return (self.__class__, (self.problem, self.fix))

    def one_line(self) -> str:
        text = f"error: {self.problem}. Fix: {self.fix}."
        return " ".join(text.split())


class DoesNotFit(UserError):
    """No partition with every op whole fits the hardware's memory (the repair proves it). A run whose ops may split
    tries its split plans before reporting it."""
