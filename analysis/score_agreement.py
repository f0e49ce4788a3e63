"""`python -m analysis score-agreement` (being written)."""

NAME = "score-agreement"
HELP = "(being written)"
NEEDS_NETWORK = True


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("score-agreement")
