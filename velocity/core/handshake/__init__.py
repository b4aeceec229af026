"""The KEMTLS hybrid handshake of Velocity/1: message codecs, the client and server state
machines, and what they share (transcript, events, configuration)."""
