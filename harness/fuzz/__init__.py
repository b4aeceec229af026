"""Seeded input generation for fuzzing and property tests."""
