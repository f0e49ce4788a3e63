"""`python -m analysis gaussian-theory` (being written)."""

NAME = "gaussian-theory"
HELP = "(being written)"
NEEDS_NETWORK = False


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("gaussian-theory")
