"""The command line: app wiring (app.py) and one module per command group. The top layer: it may import
every other package, none imports it."""
