"""GGUF files: header reading, deterministic tiny models and the content-addressed model store."""
