"""One command line: every script's --help, read as a user reads it, states the shared flags alike.

    python -m pytest tests/test_cli.py -q
"""

import argparse
import os
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
import sys
from pathlib import Path

import pytest

import cli

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("dataset_prep.py", "test_models.py", "grad_cams.py", "report.py", "models.py", "bench.py", "predict.py")
# which shared flag each script must take (the grid folder is --output-dir wherever a script reads the grid)
EXPECTED = {
    "test_models.py": ("data_dir", "output_dir", "device"),
    "grad_cams.py": ("data_dir", "output_dir", "device"),
    "report.py": ("data_dir", "output_dir"),
    "models.py": ("device",),
    "bench.py": ("device",),
    "predict.py": ("device",),
}


def help_text(script):
    """`python <script> --help` with wide lines, so every flag's help is on one line."""
    env = dict(os.environ, COLUMNS="2000")
    done = subprocess.run([sys.executable, script, "--help"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def helps():
    # the scripts' interpreters start concurrently: each spends seconds importing torch, mostly waiting on the disk
    with ThreadPoolExecutor(max_workers=4) as pool:
        return dict(zip(SCRIPTS, pool.map(help_text, SCRIPTS)))


def options(text):
    """{flag: help} of every option of a --help text (argparse puts the help of a long flag on the next line)."""
    found, flag = {}, None
    for line in text.splitlines():
        token = r"(?: (?:\{[^}]*\}|[^\s,]+))*?"  # metavars: NAME, [NAME ...] or {choice,choice}
        m = re.match(rf"^  (-[^\s,]+{token}(?:, -[^\s,]+{token})?)(?:\s{{2,}}(.*))?$", line)
        if m:
            flag = re.findall(r"(?:^|, )(-[^\s,]+)", m.group(1))[-1]  # "-h, --help" -> "--help"
            found[flag] = (m.group(2) or "").strip()
        elif flag and line.startswith(" " * 8) and line.strip():
            found[flag] = (found[flag] + " " + line.strip()).strip()
        else:
            flag = None
    return found


def test_shared_flags_read_the_same_in_every_script(helps):
    for script, names in EXPECTED.items():
        for name in names:
            spec = cli.SHARED[name]
            text = options(helps[script]).get(spec["flag"])
            assert text is not None, f"{script} has no {spec['flag']}"
            assert text.startswith(spec["help"]), (script, spec["flag"], text)


def test_every_flag_has_help_and_no_doubled_default(helps):
    for script, text in helps.items():
        found = options(text)
        assert "--help" in found and len(found) > 2, script
        for flag, line in found.items():
            assert line, f"{script}: {flag} has no help"
            assert line.count("(default:") <= 1, f"{script}: {flag}: {line}"
            assert "['" not in line, f"{script}: {flag} shows a list as a Python repr: {line}"


def test_comma_list_one_rule_everywhere():
    parse = cli.comma_list(("a", "b", "c"), what="model")
    assert parse(" a, c ,") == ["a", "c"]
    for bad, message in [("a,a", "repeated model"), ("a,x", "invalid model x; valid: a, b, c"), (",", "at least")]:
        with pytest.raises(argparse.ArgumentTypeError, match=message):
            parse(bad)
    seeds = cli.comma_list(cast=cli.int_at_least(0), what="seed")
    assert seeds("0,1,2") == [0, 1, 2]
    with pytest.raises(argparse.ArgumentTypeError, match="at least 0"):
        seeds("0,-1")


def test_numeric_types_refuse_what_would_crash_later():
    with pytest.raises(argparse.ArgumentTypeError, match="at least 2"):
        cli.int_at_least(2)("1")
    positive = cli.float_in(0, float("inf"), low_open=True)
    assert positive("1e-3") == 0.001
    for bad in ("0", "nan", "inf", "1e309", "-1", "x"):
        with pytest.raises(argparse.ArgumentTypeError):
            positive(bad)
    assert cli.float_in(0, 1, high_open=True)("0") == 0.0
    with pytest.raises(argparse.ArgumentTypeError, match=r"\[0, 1\)"):
        cli.float_in(0, 1, high_open=True)("1")


def test_help_formatter_shows_lists_as_typed():
    parser = argparse.ArgumentParser(formatter_class=cli.HelpFormatter)
    parser.add_argument("--models", default=["cnn", "vgg"], help="models")
    parser.add_argument("--lr", default=0.001, help="learning rate (default: the study's 0.001)")
    text = parser.format_help()
    assert "models (default: cnn,vgg)" in text and text.count("default") == 2
