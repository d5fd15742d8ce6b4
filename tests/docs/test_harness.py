"""The runnable-docs harness itself: markers, console parsing, output matching, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from statekeeper.testing.docs import (
    BlockFailure,
    DocRun,
    console_commands,
    doc_flags,
    first_mismatch,
    runnable_blocks,
    whole_mismatch,
)

DOC = """\
<!-- runnable-docs: aws -->
Not run:

```sh
make serve
```

<!-- run: file=conf/main.tf -->
```hcl
address = "http://127.0.0.1:8080/state/x"
```

<!-- run: exit=3 pending=cli -->
```console
$ statekeeper unlock x \\
    --force
Error: …
```
"""


def test_only_marked_blocks_run_with_their_options() -> None:
    blocks = runnable_blocks(Path("doc.md"), DOC)
    assert [(b.line, b.lang, dict(b.options)) for b in blocks] == [
        (9, "hcl", {"file": "conf/main.tf"}),
        (14, "console", {"exit": "3", "pending": "cli"}),
    ]
    assert blocks[1].expected_exit == 3
    assert blocks[1].pending == "cli"
    assert doc_flags(DOC) == {"aws"}


@pytest.mark.parametrize(
    ("markdown", "error"),
    [
        ("<!-- run -->\n\n```sh\nls\n```\n", "followed directly by a fence"),
        ("<!-- run: retries=3 -->\n```sh\nls\n```\n", "unknown runnable-docs option"),
        ("<!-- run -->\n```sh\nls\n", "never closed"),
    ],
)
def test_a_broken_marker_is_an_error(markdown: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        runnable_blocks(Path("doc.md"), markdown)


def test_console_blocks_split_into_commands_and_shown_output() -> None:
    commands = console_commands("$ a \\\n  --b\nout 1\n\nout 2\n$ c\n")
    assert [(c.text, c.expected) for c in commands] == [
        ("a \\\n  --b", ("out 1", "out 2")),
        ("c", ()),
    ]


@pytest.mark.parametrize(
    ("shown", "output", "missing"),
    [
        (["NAME  SERIAL", "app  2  …"], "NAME SERIAL\napp   2   912 B\n", None),
        (["b", "a"], "a\nb\n", "a"),  # order matters
        (["app 2"], "app 2 912 B\n", "app 2"),  # whole lines, unless … says more follows
        (["x … y"], "x 1 2 3 y\n", None),
        (["(sensitive)"], "password: (sensitive)\n", "(sensitive)"),
        (["id=…"], "ID=1\n", "id=…"),
    ],
)
def test_shown_output_matches_whole_lines_in_order(
    shown: list[str], output: str, missing: str | None
) -> None:
    assert first_mismatch(shown, output) == missing


def test_a_wrong_exit_code_or_output_fails_the_block(tmp_path: Path) -> None:
    doc = (
        "<!-- run: file=a.txt -->\n```text\nhello from 127.0.0.1:8080\n```\n"
        "<!-- run -->\n```console\n$ cat a.txt\nhello from …\n```\n"
        "<!-- run -->\n```console\n$ cat a.txt\ngoodbye\n```\n"
        "<!-- run: exit=1 -->\n```console\n$ cat a.txt\n```\n"
    )
    blocks = runnable_blocks(tmp_path / "doc.md", doc)
    run = DocRun(tmp_path / "work")
    try:
        run.run(blocks[0])
        assert (tmp_path / "work/a.txt").read_text() == f"hello from 127.0.0.1:{run.port}\n"
        run.run(blocks[1])
        with pytest.raises(BlockFailure, match="lacks the line the docs show:\n    goodbye"):
            run.run(blocks[2])
        with pytest.raises(BlockFailure, match="exited 0, the docs say 1"):
            run.run(blocks[3])
    finally:
        run.close()


def test_a_marker_shown_inside_an_unmarked_block_is_text() -> None:
    doc = "````markdown\n<!-- run -->\n```sh\nrm -rf /\n```\n````\n"
    assert runnable_blocks(Path("doc.md"), doc) == []


@pytest.mark.parametrize(
    ("output", "missing"),
    [
        ("NAME SERIAL SIZE\napp 2 1 KiB\n", None),
        ("NAME\tWORKSPACE\tSERIAL\tSIZE\napp\t-\t2\t1 KiB\n", None),  # a column added
        ("NAMESERIAL SIZE\napp 2 1 KiB\n", "NAME … SERIAL SIZE"),  # words stay words
        ("NAME SERIAL SIZE\napp 3 1 KiB\n", "app … 2 …"),
    ],
)
def test_an_ellipsis_between_blanks_stands_for_whole_words(
    output: str, missing: str | None
) -> None:
    assert first_mismatch(["NAME … SERIAL SIZE", "app … 2 …"], output) == missing


@pytest.mark.parametrize(
    ("output", "differs"),
    [
        ("pushed x: version 1\n\nwrote 9 bytes\n", None),  # blank lines are not compared
        ("pushed x: version 1\n", "lacks the line the docs show:\n    wrote … bytes"),
        ("pushed x: version 1\nnote: y\nwrote 9 bytes\n", "do not show:\n    note: y\nwhere"),
        ("pushed x: version 1\nwrote 9 bytes\nnote: y\n", "goes on past what the docs show"),
    ],
)
def test_a_whole_block_shows_every_line_of_the_output(output: str, differs: str | None) -> None:
    # What a user sees and the docs leave out fails here: first_mismatch skips it.
    shown = ["pushed x: version …", "wrote … bytes"]
    assert first_mismatch(shown, "pushed x: version 1\nnote: y\nwrote 9 bytes\n") is None
    found = whole_mismatch(shown, output)
    assert (found is None) if differs is None else (found is not None and differs in found)


@pytest.mark.parametrize(
    ("shown", "differs"),
    [
        (["a", "…", "d"], None),
        (["a", "…"], None),
        (["…", "b", "…"], None),
        (["a", "…", "b", "d"], "where they show:\n    d"),  # `…` skips to the next shown line
        (["a", "…", "x"], "lacks the line the docs show:\n    x"),
    ],
)
def test_an_ellipsis_line_in_a_whole_block_stands_for_any_lines(
    shown: list[str], differs: str | None
) -> None:
    found = whole_mismatch(shown, "a\nb\nc\nd\n")
    assert (found is None) if differs is None else (found is not None and differs in found)


def test_a_whole_block_fails_on_a_line_the_docs_leave_out(tmp_path: Path) -> None:
    doc = "<!-- run: whole -->\n```console\n$ printf 'a\\nb\\n'\na\n```\n"
    (block,) = runnable_blocks(tmp_path / "doc.md", doc)
    run = DocRun(tmp_path / "work")
    try:
        with pytest.raises(BlockFailure, match="goes on past what the docs show:\n    b"):
            run.run(block)
    finally:
        run.close()
