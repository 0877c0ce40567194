"""codecut's own error types: problems the user can fix (bad input, a missing file or package).

The CLI prints these as one line, `codecut: error: ...`, and exits 2; any other exception is a
bug, reported as such with the path of its traceback. Each type also subclasses the matching
built-in, so code that catches `ValueError` or `FileNotFoundError` keeps working. A leaf module:
it imports nothing of codecut.
"""


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
