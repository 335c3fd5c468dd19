"""The README's commands run as written: every `dg …`, `./dev.sh …`, `.venv/bin/dg …` and `mlflow …` command in it
names a real subcommand and real flags (parsed by the tools' own click commands, nothing run), every module it
runs with `python -m` or names as `crawl2serve.…` exists, and the two setup commands are the two of dev.sh."""

import importlib
import importlib.util
import re
import shlex
from pathlib import Path

import click
import pytest

REPO = Path(__file__).resolve().parents[1]
READMES = [REPO / "README.md", REPO / "deploy" / "README.md"]
TOOLS = ("dg", "./dev.sh", ".venv/bin/dg", ".venv/bin/mlflow", "mlflow")


def _shell_lines(text: str) -> list[str]:
    """Lines of the ```bash blocks (continuations joined) and inline `code` spans."""
    lines = []
    for block in re.findall(r"```(?:bash|sh)\n(.*?)```", text, flags=re.S):
        lines += [ln for ln in block.replace("\\\n", " ").splitlines() if ln.strip()]
    outside = re.sub(r"```.*?```", "", text, flags=re.S)
    lines += re.findall(r"`([^`\n]+)`", outside)
    return lines


def commands(text: str) -> list[list[str]]:
    """The README's commands of TOOLS, as argument lists (comments dropped, `&` and pipes cut off)."""
    found = []
    for line in _shell_lines(text):
        for part in re.split(r"\s(?:&&|\|\||\||;)\s|\s&\s*$|\s&$", line):
            try:
                words = shlex.split(part, comments=True)
            except ValueError:
                continue
            if words and words[0] == "export":
                continue
            for i, word in enumerate(words):  # a command ends at a shell operator
                if word in ("&", "&&", "|", "||", ";"):
                    words = words[:i]
                    break
            if len(words) > 1 and words[0] in TOOLS:  # the tool named alone is a mention, not a command
                found.append(words)
    return found


def _click_root(tool: str) -> click.Command:
    if tool.endswith("dg"):
        from dagster_dg_cli.cli import cli

        return cli
    if tool.endswith("mlflow"):
        from mlflow.cli import cli

        return cli
    if tool == "feast":
        from feast.cli.cli import cli

        return cli
    raise AssertionError(tool)


def check_click(root: click.Command, args: list[str], where: str) -> None:
    """Parse ``args`` as ``root`` would, down its subcommands (each group's own options first), without invoking
    anything: an unknown subcommand, option or value fails the way the tool itself would."""
    cmd, name = root, "tool"
    try:
        ctx = cmd.make_context(name, list(args), resilient_parsing=False)
        while isinstance(cmd, click.Group):
            rest = [*ctx._protected_args, *ctx.args]  # what the group leaves to its subcommand
            assert rest, f"{where}: {name} needs a subcommand"
            name, cmd, rest = cmd.resolve_command(ctx, rest)
            ctx = cmd.make_context(name, rest, parent=ctx, resilient_parsing=False)
    except click.exceptions.Exit:
        pass
    except click.UsageError as exc:
        raise AssertionError(f"{where}: {exc.format_message()}") from None


def dev_sh_commands() -> set[str]:
    """dev.sh's subcommands (the branches of its `case`)."""
    return set(re.findall(r"^  ([a-z]+)\)", (REPO / "dev.sh").read_text(), flags=re.M))


def check_command(words: list[str], where: str) -> None:
    tool, args = words[0], [re.sub(r"\$\(?[^)/]*\)?", "X", w) for w in words[1:]]  # a shell variable is a value
    if tool == "./dev.sh":
        assert args and args[0] in dev_sh_commands(), f"{where}: dev.sh has no command {args[:1]}"
        if args[0] == "feast":
            check_click(_click_root("feast"), ["-c", "feature_repo", *args[1:]], where)
        return
    check_click(_click_root(tool), args, where)


def _all_commands() -> list[tuple[str, list[str]]]:
    out = []
    for path in READMES:
        for words in commands(path.read_text()):
            out.append((f"{path.relative_to(REPO)}: {shlex.join(words)}", words))
    return out


@pytest.mark.parametrize("where,words", _all_commands(), ids=[w for w, _ in _all_commands()])
def test_readme_command_parses(where, words):
    check_command(words, where)


def test_the_commands_are_the_dg_ones():
    text = (REPO / "README.md").read_text()
    tools = {words[0] for words in commands(text)}
    assert {"./dev.sh", ".venv/bin/dg"} <= tools
    launches = [w for w in commands(text) if w[:2] == [".venv/bin/dg", "launch"]]
    assert {"--job", "--assets"} <= {a for w in launches for a in w}
    for old in ("dagster job execute", "dagster asset materialize", "-m pipelines.", "dagster dev -w"):
        assert old not in text, old


def test_the_two_setup_commands():
    text = (REPO / "README.md").read_text()
    block = re.search(r"## Two commands\n.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    assert [ln.split("#")[0].strip() for ln in block.splitlines() if ln.strip().startswith("./")] == [
        "./dev.sh main",
        "./dev.sh test",
    ]
    assert {"main", "test"} <= dev_sh_commands()


def test_modules_named_in_the_readmes_exist():
    """`python -m X` runs a crawl2serve module that exists (or a tool's own); a dotted `crawl2serve.…` name is a
    module or an attribute of one; no module path names a folder without the crawl2serve prefix."""
    for path in READMES:
        text = path.read_text()
        for module in re.findall(r"python3? -m ([\w.]+)", text):
            if module.split(".")[0] in ("assets", "pipelines", "resources", "serving"):
                raise AssertionError(f"{path.name}: python -m {module}: the module is crawl2serve.{module}")
            if module.startswith("crawl2serve"):
                assert importlib.util.find_spec(module) is not None, f"{path.name}: python -m {module}"
        for name in set(
            re.findall(r"`[^`]*?\b(crawl2serve\.(?:assets|pipelines|resources|serving|definitions)[\w.]*)", text)
        ):
            _resolve(name, path.name)
        bare = re.findall(r"`((?:assets|pipelines|resources|serving)\.\w+\.\w+[\w.]*)`", text)
        assert not [b for b in bare if not re.search(r"\.(py|yaml|md|json|html)$", b)], bare


def _resolve(name: str, where: str) -> None:
    parts = name.split(".")
    for i in range(len(parts), 0, -1):
        module = ".".join(parts[:i])
        try:
            obj = importlib.import_module(module)
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            assert hasattr(obj, attr), f"{where}: {name}: {module} has no {attr!r}"
            obj = getattr(obj, attr)
        return
    raise AssertionError(f"{where}: {name} is no module")


def test_the_checker_rejects_what_dg_rejects():
    """The check is real: an unknown subcommand or flag fails it."""
    with pytest.raises(AssertionError, match="No such command 'materialize'"):
        check_command(["dg", "materialize", "--select", "raw_crawl"], "x")
    with pytest.raises(AssertionError, match="--select"):
        check_command([".venv/bin/dg", "launch", "--select", "raw_crawl"], "x")
    with pytest.raises(AssertionError, match="dev.sh has no command"):
        check_command(["./dev.sh", "deploy"], "x")
    check_command([".venv/bin/dg", "launch", "--assets", "raw_crawl", "--partition", "2026-12-01"], "x")
