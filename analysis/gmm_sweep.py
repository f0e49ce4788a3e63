"""`python -m analysis gmm-sweep` (being written)."""

NAME = "gmm-sweep"
HELP = "(being written)"
NEEDS_NETWORK = True


def add_arguments(parser):
    del parser


def run(context, args):
    raise NotImplementedError("gmm-sweep")
