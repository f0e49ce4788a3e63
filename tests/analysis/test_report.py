"""`python -m analysis report`: every figure command on the tiny run, one page that lists all their files."""

import re

import pytest

from analysis.__main__ import main
from analysis.report import report_commands


@pytest.mark.slow
def test_report_writes_every_figure_it_lists(tiny_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main(["report", "--run", str(tiny_run), "--out", str(out), "--num-queries", "8"]) == 0
    printed = capsys.readouterr().out
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    for command in report_commands():
        assert f"## {command.name}" in markdown and f"<h2>{command.name}</h2>" in page
        assert any(line.startswith(command.name) for line in printed.splitlines())
        written = sorted((out / command.name).glob("*.png"))
        assert written, f"{command.name} wrote no figure"
        for figure in written:
            assert f"]({command.name}/{figure.name})" in markdown and f'src="{command.name}/{figure.name}"' in page
    listed = re.findall(r"\]\(([^)]+\.(?:png|csv))\)", markdown)
    assert listed and all((out / name).stat().st_size > 0 for name in listed)


def test_report_refuses_unknown_skips(tiny_run, tmp_path, capsys):
    assert main(["report", "--run", str(tiny_run), "--out", str(tmp_path), "--skip", "nonsense"]) == 2
    assert "`--skip` names unknown commands: nonsense" in capsys.readouterr().err
