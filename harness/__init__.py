"""The Velocity/1 conformance and interop harness: scenarios, vectors, fuzzing, transcripts.

It drives any Velocity endpoint; it may import ``velocity``, never the other way round.
"""
