"""The sans-I/O protocol core: codecs, packet protection and state machines.

Nothing here opens sockets, reads clocks or draws randomness; time and entropy are inputs.
"""
