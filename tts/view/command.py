"""The ``tts view`` command: the one place the page meets the terminal (click, messages, the browser)."""

from __future__ import annotations

import click

from .page import ViewError, write


class ViewUsageError(click.ClickException):
    """One line on stderr and exit status 2, like every user mistake on the command line."""

    exit_code = 2


@click.command("view")
@click.argument("files", nargs=-1, required=True)
@click.option("-o", "--output", "output", default="report.html", show_default=True,
              help="The HTML file to write (replaced only when tts view wrote it).")
@click.option("--title", default=None, help="The page's title (default: the files' names).")
@click.option("--open", "open_page", is_flag=True, help="Open the page in the default browser, where there is one.")
def view_command(files, output, title, open_page) -> None:
    """Write one self-contained HTML page (no network) to inspect result files: accuracy and compute per
    strategy, a problem list that filters and sorts, and each problem's candidates, votes, search tree
    and why its answer was chosen."""
    try:
        path = write(files, output, title)
    except ViewError as exc:
        raise ViewUsageError(str(exc)) from None
    except OSError as exc:
        raise ViewUsageError(f"-o {output}: {exc.strerror or exc}") from None
    click.echo(f"page: {path}")
    if open_page:
        import webbrowser

        try:
            opened = webbrowser.open(path.resolve().as_uri())
        except webbrowser.Error:
            opened = False
        if not opened:
            click.echo("no browser found here; open the page's file in one", err=True)
