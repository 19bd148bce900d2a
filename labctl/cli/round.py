"""`labctl round`: a whole round in one go. The story itself (lock → fetch → build → preflight → seal →
run → unseal) is `labctl.run.pipeline.do_round`'s; this module parses the options and renders the
outcome: the run table, the controls alarm, the exit code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from labctl.cli.console import DEFAULT_LAB, EXIT_FAIL, JsonOpt, LabArg, ProfileOpt, err, fail, fail_spec, out
from labctl.cli.run import interrupted, report, rows_of, say_for
from labctl.errors import LabctlError, one_line
from labctl.lock.fetch import FetchError
from labctl.spec.located import SpecError


def round_command(lab: LabArg = DEFAULT_LAB, profile: ProfileOpt = None,
                  rounds_dir: Annotated[Path, typer.Option("--rounds-dir")] = Path("rounds"),
                  as_json: JsonOpt = False) -> None:
    """Lock (a first run) or check the lock → fetch → build (missing images only) → seal → run →
    unseal → results table. Drift against an existing lock stops the round."""
    from labctl.run.pipeline import do_round  # the whole run path: only when a round is asked for

    try:
        done = do_round(lab, profile, rounds_dir, say_for(as_json), console=err if as_json else out)
    except SpecError as e:  # the lab itself: located issues, as `labctl validate` prints them
        raise fail_spec(e, as_json) from None
    except FetchError as e:
        raise fail(f"fetch failed: {e}", as_json) from None
    except (LabctlError, OSError) as e:  # OSError: the lab's or the round's files on disk
        raise fail(one_line(e), as_json) from None
    except KeyboardInterrupt:
        raise interrupted() from None
    rows = rows_of(done.summaries, done.mapping)
    failed = report(rows, done.round_dir, done.round_id, {"round_dir": str(done.round_dir)},
                    f"round {done.round_id} ({done.round_dir})", as_json, done.loaded.lab)
    if failed or any(r["status"] == "errored" for r in rows):
        raise typer.Exit(EXIT_FAIL)
