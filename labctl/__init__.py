"""labctl: declarative, content-pinned, blind and isolated model showdowns."""

__version__ = "0.1.0"
