"""The trainer's Pipes messages are read whole, even while the trainer is still writing a line."""

import json
import threading
import time

from dagster._utils import tail_file

from crawl2serve.resources.pipes_messages import whole_lines

MESSAGE = json.dumps({"__dagster_pipes_version": "0.1", "method": "log", "params": {"message": "step 9/10"}})


def _read(tail, path, done: threading.Event) -> list[str]:
    return list(tail(str(path), done.is_set))


def _write_in_two_parts(path, done: threading.Event) -> None:
    """A line written as a slow writer (or a write split across pages) leaves it: half, a pause, the rest."""
    with open(path, "a", encoding="utf-8") as f:
        f.write(MESSAGE[:35])
        f.flush()
        time.sleep(0.3)
        f.write(MESSAGE[35:] + "\n")
        f.flush()
    time.sleep(0.1)
    done.set()


def test_a_line_being_written_is_read_once_whole(tmp_path):
    for tail, expected_whole in ((tail_file, False), (whole_lines, True)):
        path = tmp_path / f"{tail.__name__}.jsonl"
        path.write_text(json.dumps({"method": "opened"}) + "\n")
        done = threading.Event()
        writer = threading.Thread(target=_write_in_two_parts, args=(path, done))
        writer.start()
        lines = _read(tail, path, done)
        writer.join()
        parsed = []
        for line in lines:
            try:
                parsed.append(json.loads(line))
            except json.JSONDecodeError:
                parsed.append(None)
        if expected_whole:
            assert parsed == [{"method": "opened"}, json.loads(MESSAGE)], lines
        else:  # Dagster's own tail: the half line comes out alone and does not parse (the defect worked around)
            assert None in parsed, lines


def test_a_last_line_without_a_newline_is_read_after_the_stop(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(MESSAGE)
    assert list(whole_lines(str(path), lambda: True)) == [MESSAGE]
