"""The networked side of Velocity: asyncio endpoints, and the only place that reads the
clock and the OS's randomness."""
