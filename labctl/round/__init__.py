"""A round on disk: its records, the seal (commit-reveal), the controls, verification and the shareable
bundle."""
