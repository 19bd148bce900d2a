from labctl.cli.app import app

app()
