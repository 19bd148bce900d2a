from labctl.cli import app

app()
