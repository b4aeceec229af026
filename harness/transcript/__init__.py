"""Transcripts as the harness reads them: loading and schema-checking files, normalising away
what changes from run to run, the semantic summary a reviewer compares, the difference
between two transcripts, and the per-scenario baselines a run is compared with. The records
themselves are made by ``velocity.core.trace``."""

from harness.transcript.files import TranscriptError, file_errors, load, validate

__all__ = ["TranscriptError", "file_errors", "load", "validate"]
