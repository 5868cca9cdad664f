from rethink.shared.cli.main import app

app()
