"""Transcripts as the harness reads them: loading and schema-checking files, normalising away
what changes from run to run, the semantic summary a reviewer compares, the differences
between two transcripts, and the per-scenario baselines a run is compared with. The records
themselves are made by ``velocity.core.trace``; the ``velocity transcript`` commands are in
``harness.transcript.cli``."""

from harness.transcript.baseline import baseline_name, compare_baseline, save_baseline
from harness.transcript.diff import Difference, compare, diff
from harness.transcript.files import TranscriptError, file_errors, load, validate
from harness.transcript.normalise import normalise
from harness.transcript.summary import summary

__all__ = ["Difference", "TranscriptError", "baseline_name", "compare", "compare_baseline",
           "diff", "file_errors", "load", "normalise", "save_baseline", "summary", "validate"]
