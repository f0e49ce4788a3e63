"""`python -m analysis score-field` (being written)."""

NAME = "score-field"
HELP = "(being written)"
NEEDS_NETWORK = True


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("score-field")
