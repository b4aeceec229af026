"""``python -m velocity.cli``."""

from velocity.cli import main

main()
