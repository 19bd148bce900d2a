"""The one base of every error a labctl command reports.

Why one base: a command catches `LabctlError` (plus `OSError` for the file system) and prints its
message as the whole story — one line naming the file, field, image or run — instead of catching a
long tuple of module-specific classes that drifts every time a module gains one. Subclasses keep
their historical second base (`ValueError`, `RuntimeError`) so callers that catch those still do.
Errors that never reach a user (a download's internal retry signals) do not derive from it.
"""

from __future__ import annotations


class LabctlError(Exception):
    """An error whose message is meant for the user: what failed, where, and what to do."""

    @property
    def problems(self) -> list[str]:
        """One line per problem (errors that gather several set this; most have one)."""
        return self.__dict__.get("_problems") or [str(self)]

    @problems.setter
    def problems(self, value: list[str]) -> None:
        self.__dict__["_problems"] = value


def one_line(e: BaseException) -> str:
    """The message a command prints for an error: its problems joined on one line."""
    return "; ".join(e.problems) if isinstance(e, LabctlError) else str(e)
