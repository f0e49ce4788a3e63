"""`python -m analysis learning-dynamics` (being written)."""

NAME = "learning-dynamics"
HELP = "(being written)"
NEEDS_NETWORK = False


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("learning-dynamics")
