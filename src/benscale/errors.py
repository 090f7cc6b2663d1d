"""User-facing errors: each names the bad value, the file, and what to do about it."""

from __future__ import annotations

from pathlib import Path


class BenscaleError(Exception):
    """Base class: the CLI prints these without a traceback and exits non-zero."""


class ConfigError(BenscaleError):
    """A configuration value is missing, unknown or inconsistent."""


class ArchiveError(BenscaleError):
    """The archive as a whole cannot be used (empty, unrecognisable, truncated, unsafe)."""


class BadPatchError(BenscaleError):
    """One patch cannot be used; the others still can.

    Attributes:
        patch_id: the patch's name (folder name or v2 patch_id).
        path: the file that is bad.
        problem: what is wrong with it, in words.
    """

    def __init__(self, patch_id: str, path: str | Path, problem: str) -> None:
        """Name the patch, the bad file and the problem."""
        self.patch_id = patch_id
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem} (patch {patch_id})")


class DataError(BenscaleError):
    """Extracted data (shards, statistics) do not match what a stage needs."""
