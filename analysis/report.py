"""`python -m analysis report --run RUN_DIR`: every figure command on one run, as one page.

Runs each analysis command (gaussian-theory, score-agreement, trajectories, samples,
gmm-sweep, score-field, learning-dynamics) with its default options and the shared ones
(`--step`, `--weights`, `--seed`, `--num-queries`), each into `OUT/<command>/`, then writes
`OUT/report.md` and `OUT/report.html`: per command, its summary, its figures and links to
its CSV files, and the time it took. Every command's options, memory and output files are
checked before the first one runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import html
import importlib
import time
from pathlib import Path

from tqdm.auto import tqdm

from analysis.output import prepare_out

NAME = "report"
HELP = "all figure commands on one run, into report.md and report.html"
NEEDS_NETWORK = True
NUM_QUERIES = 128
OUTPUTS = ("report.md", "report.html")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip", default="", help="comma-separated commands to leave out")


@dataclasses.dataclass(frozen=True)
class Section:
    """One command's part of the report."""

    name: str
    title: str
    summary: list[str]
    figures: list[Path]
    tables: list[Path]
    seconds: float


def command_modules() -> list:
    """The figure commands, in the order of the paper's figures (the registry of `python -m analysis`).

    Commands that set `IN_REPORT = False` (minutes of sampling, e.g. `teleport`) are left out: run them alone.
    """
    from analysis.__main__ import COMMAND_MODULES

    modules = [importlib.import_module(name) for name in COMMAND_MODULES if not name.endswith(".report")]
    return [module for module in modules if getattr(module, "IN_REPORT", True)]


def default_arguments(module, shared: argparse.Namespace) -> argparse.Namespace:
    """`module`'s own options at their defaults, plus the shared ones of this run."""
    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return argparse.Namespace(**{**vars(shared), **vars(parser.parse_args([]))})


def run_section(module, context, shared: argparse.Namespace) -> Section:
    """Run one command into its own subdirectory and collect what it wrote."""
    out = context.out / module.NAME
    start = time.perf_counter()
    summary = list(module.run(dataclasses.replace(context, out=out), default_arguments(module, shared)))
    title = (module.__doc__ or module.NAME).strip().splitlines()[0]
    return Section(module.NAME, title, summary, sorted(out.glob("*.png")), sorted(out.glob("*.csv")),
                   time.perf_counter() - start)


def write_markdown(path: Path, heading: str, sections: list[Section]) -> Path:
    lines = [f"# {heading}", ""]
    for section in sections:
        lines += [f"## {section.name}", "", section.title, "", f"({section.seconds:.1f} s)", "", "```"]
        lines += section.summary + ["```", ""]
        lines += [f"![{figure.stem}]({figure.relative_to(path.parent)})" for figure in section.figures] + [""]
        lines += [f"- [{table.name}]({table.relative_to(path.parent)})" for table in section.tables] + [""]
    path.write_text("\n".join(lines))
    return path


def write_html(path: Path, heading: str, sections: list[Section]) -> Path:
    body = [f"<h1>{html.escape(heading)}</h1>"]
    for section in sections:
        body += [f"<h2>{html.escape(section.name)}</h2>", f"<p>{html.escape(section.title)} "
                 f"({section.seconds:.1f} s)</p>", f"<pre>{html.escape(chr(10).join(section.summary))}</pre>"]
        body += [f'<img src="{figure.relative_to(path.parent)}" alt="{figure.stem}" style="max-width:100%">'
                 for figure in section.figures]
        body += ["<ul>"] + [f'<li><a href="{table.relative_to(path.parent)}">{table.name}</a></li>'
                            for table in section.tables] + ["</ul>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title></head>"
            f"<body>{''.join(body)}</body></html>")
    path.write_text(page)
    return path


def section_modules(context, args) -> list:
    """The command modules the report runs: all but `--skip`'s (and those that need a run, for a network file)."""
    skip = {name.strip() for name in args.skip.split(",") if name.strip()}
    unknown = skip - {m.NAME for m in command_modules()}
    if unknown:
        raise ValueError(f"`--skip` names unknown commands: {', '.join(sorted(unknown))}")
    if context.run_dir is None:  # a --network file: no probes.csv or loss.csv to read
        skip |= {m.NAME for m in command_modules() if getattr(m, "NEEDS_RUN", False)}
    return [m for m in command_modules() if m.NAME not in skip]


def check(context, args) -> None:
    """Every section's options and memory (`module.check`) and its files in `OUT/<command>/` (`prepare_out`)."""
    for module in section_modules(context, args):
        out = prepare_out(context.out / module.NAME, module.OUTPUTS)
        module.check(dataclasses.replace(context, out=out), default_arguments(module, args))


def run(context, args) -> list[str]:
    check(context, args)
    modules = section_modules(context, args)
    start = time.perf_counter()
    sections = [run_section(module, context, args) for module in tqdm(modules, desc="report", unit="command")]
    heading = f"gaussjax analysis of {context.source}"
    markdown = write_markdown(context.path("report.md"), heading, sections)
    page = write_html(context.path("report.html"), heading, sections)
    lines = [f"{s.name:<18} {s.seconds:6.1f} s  " + (s.summary[0] if s.summary else "") for s in sections]
    return lines + [f"report in {time.perf_counter() - start:.1f} s: {markdown} and {page}"]
