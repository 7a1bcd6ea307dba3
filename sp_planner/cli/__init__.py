"""Command-line entry points: thin typer commands that each call one library function."""
