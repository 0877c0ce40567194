"""codecut's own error types: problems the user can fix (bad input, a missing file or package).

The CLI prints these as one line, `codecut: error: ...`, and exits 2; any other exception is a
bug, reported as such with the path of its traceback. Each type also subclasses the matching
built-in, so code that catches `ValueError` or `FileNotFoundError` keeps working. Part of the
floor (`codecut.core`): it imports nothing of codecut.
"""

from __future__ import annotations

import re
from collections.abc import Mapping


class CodecutError(Exception):
    """Base of every error whose message tells the user what to do."""


class BadInput(CodecutError, ValueError):
    """An argument, file entry or request that cannot be used as given."""


class BadType(CodecutError, TypeError):
    """An argument of the wrong kind (a dict where a Fact is needed, ...)."""


class NotFound(CodecutError, FileNotFoundError):
    """A file or directory the user named is missing or incomplete."""


class MissingPackage(CodecutError, ModuleNotFoundError):
    """An optional package (the default model's, say) is not installed; the message says how."""


class BadOption(BadInput):
    """A config field set to a value the code cannot use.

    Configs check their fields when they are made (`__post_init__`); the message calls them by
    their names (`fields`), and the command line says its flags instead:
    `error.named({"n_codes": "--codes"})`."""

    def __init__(self, message: str, *fields: str):
        super().__init__(message)
        self.message, self.fields = message, fields

    def named(self, names: Mapping[str, str]) -> BadOption:
        """The same error with each field called what the user typed (a whole word only)."""
        said = self.message
        for field in self.fields:
            if field in names:
                said = re.sub(rf"(?<![\w-]){re.escape(field)}\b", names[field], said)
        return BadOption(said, *self.fields)


def is_whole(value: object, least: int) -> bool:
    """Whether `value` is a whole number >= `least` (a bool is not one)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def check_whole(name: str, value: object, least: int) -> None:
    """Raise BadOption unless config field `name`'s `value` is a whole number >= `least`."""
    if not is_whole(value, least):
        raise BadOption(f"{name} must be a whole number >= {least}, got {value!r}", name)
