"""Known-answer vectors of Velocity/1: ``generate`` builds them from the spec without
``velocity.core`` (scapy layers and ``cryptography`` primitives), ``check`` runs the reference
implementation against them, ``python -m harness.vectors`` is the command line."""

from pathlib import Path

VECTORS_DIR = Path(__file__).resolve().parents[2] / "vectors"
SCHEMA_PATH = Path(__file__).resolve().parents[1] / "schemas" / "vectors.schema.json"
