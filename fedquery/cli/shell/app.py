"""The interactive loop of ``fedquery shell``: prompt_toolkit input around a
:class:`~fedquery.cli.shell.session.ShellSession`.

Persistent history, multi-line editing (Enter submits a statement ended by ``;`` or a
backslash command, and inserts a newline otherwise), suggestions from history, SQL
highlighting, and completion from :func:`~fedquery.cli.shell.completion.complete`.
"""

from __future__ import annotations

import os
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.completion import Completer, Completion
from prompt_toolkit.history import FileHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.lexers import PygmentsLexer
from pygments.lexers.sql import SqlLexer

from fedquery.cli.shell.commands import completion_spec
from fedquery.cli.shell.completion import complete
from fedquery.cli.shell.session import ShellSession, statement_complete

PROMPT = "fedquery> "
CONTINUATION = "      ..> "


def history_path() -> Path:
    """``$FEDQUERY_HISTORY``, else ``$XDG_DATA_HOME/fedquery/history`` (~/.local/share)."""
    if os.environ.get("FEDQUERY_HISTORY"):
        return Path(os.environ["FEDQUERY_HISTORY"])
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "fedquery" / "history"


class ShellCompleter(Completer):
    def __init__(self, session: ShellSession) -> None:
        self.session = session
        self.commands = completion_spec()

    def get_completions(self, document, complete_event):
        for suggestion in complete(document.text, self.session.catalog(),
                                   cursor=document.cursor_position, commands=self.commands,
                                   sites=self.session.sites()):
            yield Completion(suggestion.text, start_position=suggestion.start,
                             display_meta=suggestion.meta or suggestion.kind)


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("enter")
    def _enter(event) -> None:
        buffer = event.current_buffer
        state = buffer.complete_state
        if state is not None and state.current_completion is not None:
            buffer.apply_completion(state.current_completion)
            return
        if statement_complete(buffer.text):
            buffer.validate_and_handle()
        else:
            buffer.insert_text("\n")

    @bindings.add("escape", "enter")
    def _submit(event) -> None:  # Alt-Enter submits whatever is typed
        event.current_buffer.validate_and_handle()

    return bindings


def run_shell(session: ShellSession, *, banner: str | None = None) -> None:
    """Read and run inputs until ``\\q``, ``quit`` or end of input (Ctrl-D); Ctrl-C drops the
    input being typed."""
    path = history_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    prompt = PromptSession(
        history=FileHistory(str(path)), auto_suggest=AutoSuggestFromHistory(),
        lexer=PygmentsLexer(SqlLexer), completer=ShellCompleter(session),
        complete_while_typing=True, multiline=True, key_bindings=_key_bindings(),
        prompt_continuation=lambda width, line, soft: CONTINUATION[-width:].rjust(width),
        enable_history_search=False)
    if banner:
        session.echo(banner)
    while True:
        try:
            text = prompt.prompt(PROMPT)
        except KeyboardInterrupt:
            continue
        except EOFError:
            break
        if not session.handle(text):
            break
    session.close()
