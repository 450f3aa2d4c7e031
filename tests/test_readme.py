"""Every `python <script>.py ...` command in README_PYTORCH.md parses with that script's own argument parser (the
flags exist and take the values shown): a renamed or removed flag breaks this test, not a user's copy-paste. The
commands that run quickly are run for real elsewhere (the quick start, the migration-guide commands)."""
import importlib
import os
import re
import shlex

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def readme_commands():
    text = open(os.path.join(ROOT, "README_PYTORCH.md"), encoding="utf-8").read()
    cmds = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        block = block.replace("\\\n", " ")
        variables = dict(re.findall(r'^(\w+)="([^"]*)"', block, re.M))
        for line in block.split("\n"):
            line = re.sub(r"\s+#.*$", "", line).strip()
            for part in re.split(r"&&|;", line):
                part = part.strip().strip("()").strip()
                if re.match(r"python \S+\.py", part) and not part.startswith("python web/"):
                    for name, value in variables.items():
                        part = part.replace(f"${name}", value)
                    part = re.sub(r"\[[^\]]*\]", "", part)         # optional flags shown as [--json]
                    cmds.append(part)
    return cmds


COMMANDS = readme_commands()


def test_readme_has_commands():
    assert len(COMMANDS) > 20


@pytest.mark.parametrize("cmd", COMMANDS, ids=[c[:60] for c in COMMANDS])
def test_readme_command_parses(cmd):
    argv = shlex.split(cmd)
    module = importlib.import_module(argv[1][:-3])
    module.get_parser().parse_args(argv[2:])                      # SystemExit (exit 2) on an unknown flag
