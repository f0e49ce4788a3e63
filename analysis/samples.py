"""`python -m analysis samples` (being written)."""

NAME = "samples"
HELP = "(being written)"
NEEDS_NETWORK = True


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("samples")
