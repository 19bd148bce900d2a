"""The metering proxy between an agent and its model: the relay, the wire dialects, the state and the
transcript."""
