"""``python -m gliomaseg`` (also what ``torchrun -m gliomaseg`` runs)."""

from gliomaseg.cli import app

app(prog_name="gliomaseg")
