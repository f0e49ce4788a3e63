"""`python -m analysis trajectories` (being written)."""

NAME = "trajectories"
HELP = "(being written)"
NEEDS_NETWORK = True


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("trajectories")
