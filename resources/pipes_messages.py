"""The trainer's Pipes messages read whole: Dagster's file message reader, less its race on a line being written.

``dagster._utils.tail_file`` (which ``PipesFileMessageReader`` tails its file with) yields what ``readline`` returns,
and at the end of a file that is the part of a line the writer has not finished: the reader thread then fails on
``json.loads``, stops, and every later message is lost. Seen in CI on a 2-core runner: ``JSONDecodeError:
Unterminated string`` in the reader thread, then ``lora_adapter``'s "the trainer finished without reporting an
adapter". :func:`whole_lines` yields a line only once its newline has been written.
"""

import contextlib
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator

import dagster as dg


def whole_lines(path: str, should_stop: Callable[[], bool], poll_s: float = 0.01) -> Iterator[str]:
    """Tail ``path`` until ``should_stop()`` and nothing more is there: each line once it ends in a newline
    (a last line without one is yielded after the stop, when its writer is gone)."""
    partial = ""
    with open(path, encoding="utf-8") as f:
        while True:
            chunk = f.readline()
            if chunk:
                partial += chunk
                if partial.endswith("\n"):
                    yield partial
                    partial = ""
            elif should_stop():
                if partial.strip():
                    yield partial
                return
            else:
                time.sleep(poll_s)


class WholeLineFileMessageReader(dg.PipesFileMessageReader):
    """``PipesFileMessageReader`` reading its file with :func:`whole_lines`."""

    def _reader_thread(self, handler, is_resource_complete) -> None:
        try:
            for line in whole_lines(self._path, is_resource_complete.is_set):
                handler.handle_message(json.loads(line))
        except Exception:
            handler.report_pipes_framework_exception(f"{type(self).__name__} reader thread", sys.exc_info())
            raise


class WholeLineTempFileMessageReader(dg.PipesTempFileMessageReader):
    """``PipesTempFileMessageReader`` (what ``PipesSubprocessClient`` reads with by default), with
    :class:`WholeLineFileMessageReader` on its temporary file."""

    @contextlib.contextmanager
    def read_messages(self, handler):
        with tempfile.TemporaryDirectory() as folder:
            reader = WholeLineFileMessageReader(
                os.path.join(folder, "messages"), include_stdio_in_messages=self._include_stdio_in_messages
            )
            with reader.read_messages(handler) as params:
                yield params
