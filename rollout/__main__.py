from rollout.cli import app

app(prog_name="rollout")
