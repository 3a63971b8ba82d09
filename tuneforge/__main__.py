"""`python -m tuneforge`: the same CLI as the `tuneforge` entry point."""

from tuneforge.cli import main

main(prog_name="tuneforge")
