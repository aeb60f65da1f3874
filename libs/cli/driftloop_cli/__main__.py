from driftloop_cli.main import app

app(prog_name="driftloop")
