"""Analysis command line: `python -m analysis COMMAND ...` (see `python -m analysis --help`)."""
