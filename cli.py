"""The command line the scripts share: argument types, the help formatter and the flags every stage spells alike.

    from cli import HelpFormatter, comma_list, int_at_least, add_shared
    parser = argparse.ArgumentParser(description=..., formatter_class=HelpFormatter)
    add_shared(parser, "data_dir", "output_dir", "device")      # same name, same meaning, same help everywhere
    parser.add_argument("--models", type=comma_list(MODEL_NAMES), default=list(MODEL_NAMES), help=...)

One rule for comma lists in every script: values are stripped, empty items ignored, an unknown value is an error
that names the valid ones, and a repeated value is an error (a grid axis given twice is a typo, not a wish to
train the same cell twice). Numeric flags are checked by their type, so a bad value is an argparse error naming
the flag (exit status 2), never a traceback later.
"""

import argparse
import math

DEVICE_CHOICES = ("auto", "cpu", "cuda")
PREP_HINT = "run python dataset_prep.py first (or python dataset_prep.py --synthetic for the synthetic demo)"


class HelpFormatter(argparse.HelpFormatter):
    """Appends "(default: X)" where there is a default to show and the help does not state one already; lists
    are shown comma-separated, as they are typed."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or "default" in text \
                or not action.option_strings:
            return text
        shown = ",".join(map(str, default)) if isinstance(default, (list, tuple)) else str(default)
        return f"{text} (default: {shown.replace('%', '%%')})"


def comma_list(valid=None, cast=str, what="value"):
    """argparse type: comma-separated values -> list, cast each; unknown or repeated values are errors."""

    def parse(text):
        try:
            values = [cast(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {what}s, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError(f"expected at least one {what}, got {text!r}")
        bad = [str(v) for v in values if valid is not None and v not in valid]
        if bad:
            raise argparse.ArgumentTypeError(f"invalid {what} {', '.join(bad)}; valid: {', '.join(map(str, valid))}")
        if len(set(values)) != len(values):
            raise argparse.ArgumentTypeError(f"repeated {what} in {text!r}")
        return values

    return parse


def int_at_least(least, most=None):
    """argparse type: an integer >= least (and <= most, when given)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected integers (at least {least}), got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}, got {value}")
        if most is not None and value > most:
            raise argparse.ArgumentTypeError(f"must be at most {most}, got {value}")
        return value

    return parse


def float_in(low, high, low_open=False, high_open=False):
    """argparse type: a finite float in [low, high] (an end marked open excluded)."""

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        below = value <= low if low_open else value < low
        above = value >= high if high_open else value > high
        if not math.isfinite(value) or below or above:
            lo, hi = "(" if low_open else "[", ")" if high_open else "]"
            raise argparse.ArgumentTypeError(f"must be in {lo}{low:g}, {high:g}{hi}, got {text}")
        return value

    return parse


# The flags several scripts take: one spelling, one meaning, one help text (tests/test_cli.py checks --help).
SHARED = {
    "data_dir": {"flag": "--data-dir", "default": "data/prepared",
                 "help": "the prepared sets written by dataset_prep.py (<set>/manifest.csv)"},
    "output_dir": {"flag": "--output-dir", "default": ".",
                   "help": "the grid folder: test_models.py writes runs/ and the tables there, grad_cams.py and "
                           "report.py read them and write beside them"},
    "device": {"flag": "--device", "default": "auto", "choices": DEVICE_CHOICES,
               "help": "auto: CUDA if available, else the CPU; cuda without CUDA is an error"},
}


def add_shared(parser, *names, **defaults):
    """Add the shared flags `names` (keys of SHARED) with their common help; `defaults` overrides a default."""
    for name in names:
        spec = dict(SHARED[name])
        flag = spec.pop("flag")
        if name in defaults:
            spec["default"] = defaults[name]
        parser.add_argument(flag, **spec)


def duration_text(seconds):
    """A duration as progress lines print it: '42 s', '3 min 07 s', '1 h 05 min'."""
    seconds = round(seconds)
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min" if seconds >= 3600 else \
        f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def writable(folder, flag, create=True):
    """Stop (SystemExit, naming the folder, the flag and the fix) unless `folder` can be written: made when
    missing (create=True: runs.check_writable), else only checked (runs.check_creatable)."""
    import runs  # the one owner of what an output folder must allow

    try:
        (runs.check_writable if create else runs.check_creatable)(folder)
    except runs.NotWritableError as e:
        raise SystemExit(f"{e}: choose another {flag}, or make this one writable") from None


INTERRUPTED = 130  # the exit status of a process stopped by Ctrl-C (128 + SIGINT), as shells report it
TERMINATED = 143  # 128 + SIGTERM: what a batch system (SLURM at preemption or its time limit) sends first


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process is, so that it stops as after Ctrl-C: what it holds is released (a cell's
    lease) and what it finished is kept (resume.py keeps a cell's epoch checkpoint)."""


def _terminate(signum, frame):
    raise Terminated()


def run_main(name, entry, kept="what was finished is kept (every file is written atomically)", cleanup=None):
    """Run `entry()` (a script's main) as `name`: Ctrl-C stops it with "<name>: interrupted; <kept>; rerun the
    same command to resume" on stderr and exit status 130, SIGTERM likewise ("terminated", 143), not a traceback.
    Exit status 0 when `entry` returns (a script with another status raises SystemExit itself). `cleanup()` runs
    however it ends."""
    import signal
    import sys

    signal.signal(signal.SIGTERM, _terminate)
    try:
        entry()
    except KeyboardInterrupt as stop:
        how, status = ("terminated", TERMINATED) if isinstance(stop, Terminated) else ("interrupted", INTERRUPTED)
        print(f"\n{name}: {how}; {kept}; rerun the same command to resume", file=sys.stderr)
        raise SystemExit(status) from None
    finally:
        if cleanup is not None:
            cleanup()
