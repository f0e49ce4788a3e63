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
import time
from pathlib import Path

from tqdm.auto import tqdm

from analysis._common import Command, Result
from analysis.output import prepare_out

OUTPUTS = ("report.md", "report.html")


def report_commands() -> list[Command]:
    """The figure commands, in the order of the paper's figures (the registry of `python -m analysis`).

    Commands with `in_report=False` (minutes of sampling, e.g. `teleport`) are left out: run them alone.
    """
    from analysis.__main__ import commands

    return [command for command in commands() if command.in_report and command.name != "report"]


def skipped_commands(text: str) -> set[str]:
    """`--skip`: comma-separated names of report commands."""
    skip = {name.strip() for name in str(text).split(",") if name.strip()}
    unknown = skip - {command.name for command in report_commands()}
    if unknown:
        raise argparse.ArgumentTypeError(f"names unknown commands: {', '.join(sorted(unknown))}")
    return skip


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--skip", type=skipped_commands, default="", help="comma-separated commands to leave out")


@dataclasses.dataclass(frozen=True)
class Section:
    """One command's part of the report: its title (the first line of its description), result and time."""

    name: str
    title: str
    result: Result
    seconds: float

    @property
    def figures(self) -> list[Path]:
        return [path for path in self.result.files if path.suffix == ".png"]

    @property
    def tables(self) -> list[Path]:
        return [path for path in self.result.files if path.suffix == ".csv"]


def run_section(command: Command, context, shared: argparse.Namespace) -> Section:
    """Run one command with its default options into `OUT/<command>/`."""
    start = time.perf_counter()
    result = command.run(dataclasses.replace(context, out=context.out / command.name), command.defaults(shared))
    title = command.description.strip().splitlines()[0]
    return Section(command.name, title, result, time.perf_counter() - start)


def write_markdown(path: Path, heading: str, sections: list[Section]) -> Path:
    lines = [f"# {heading}", ""]
    for section in sections:
        lines += [f"## {section.name}", "", section.title, "", f"({section.seconds:.1f} s)", "", "```"]
        lines += section.result.summary + ["```", ""]
        lines += [f"![{figure.stem}]({figure.relative_to(path.parent)})" for figure in section.figures] + [""]
        lines += [f"- [{table.name}]({table.relative_to(path.parent)})" for table in section.tables] + [""]
    path.write_text("\n".join(lines))
    return path


def write_html(path: Path, heading: str, sections: list[Section]) -> Path:
    body = [f"<h1>{html.escape(heading)}</h1>"]
    for section in sections:
        body += [f"<h2>{html.escape(section.name)}</h2>", f"<p>{html.escape(section.title)} "
                 f"({section.seconds:.1f} s)</p>", f"<pre>{html.escape(chr(10).join(section.result.summary))}</pre>"]
        body += [f'<img src="{figure.relative_to(path.parent)}" alt="{figure.stem}" style="max-width:100%">'
                 for figure in section.figures]
        body += ["<ul>"] + [f'<li><a href="{table.relative_to(path.parent)}">{table.name}</a></li>'
                            for table in section.tables] + ["</ul>"]
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(heading)}</title></head>"
            f"<body>{''.join(body)}</body></html>")
    path.write_text(page)
    return path


def section_commands(context, args) -> list[Command]:
    """The commands the report runs: all but `--skip`'s (and those that read a run's files, for a network file)."""
    return [command for command in report_commands() if command.name not in args.skip
            and not (command.needs_run and context.run_dir is None)]  # a --network file has no probes.csv


def validate(context, args) -> None:
    """Every section's checks (`Command.validate`, its options against the data and memory) and its files in
    `OUT/<command>/` (`prepare_out`), before the first section runs."""
    for command in section_commands(context, args):
        out = prepare_out(context.out / command.name, command.outputs)
        command.validate(dataclasses.replace(context, out=out), command.defaults(args))


def run(context, args) -> Result:
    start = time.perf_counter()
    commands = section_commands(context, args)
    sections = [run_section(command, context, args) for command in tqdm(commands, desc="report", unit="command")]
    heading = f"gaussjax analysis of {context.source}"
    markdown = write_markdown(context.path("report.md"), heading, sections)
    page = write_html(context.path("report.html"), heading, sections)
    lines = [f"{s.name:<18} {s.seconds:6.1f} s  " + (s.result.summary[0] if s.result.summary else "")
             for s in sections]
    return Result([*lines, f"report in {time.perf_counter() - start:.1f} s"], [markdown, page])


COMMAND = Command(
    name="report", help="all figure commands on one run, into report.md and report.html", description=__doc__,
    outputs=OUTPUTS, add_arguments=add_arguments, validate=validate, run=run, num_queries=128,
)
