"""edgegate init | run | check | render | targets | schema | ... Only this layer turns errors into exit codes.

What it prints carries names, paths and messages from the pull request: everything goes through
``logsafe.log_text`` (no line can start a GitHub Actions workflow command)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from edgegate import __version__
from edgegate.config.files import OUT_DIR
from edgegate.errors import ConfigError, EdgeGateError
from edgegate.trust.logsafe import CommandPause, log_text

EXIT_OK, EXIT_FAILED, EXIT_INPUT, EXIT_INTERNAL = 0, 1, 2, 3


def _fail(exc: EdgeGateError) -> None:
    """The one way an error reaches the terminal: per problem ``file:line: field: what, got X``
    then ``Fix: ...`` (edgegate.errors.EdgeGateError.terminal; the Action prints the same)."""
    text = exc.terminal
    if not exc.where:
        text = f"edgegate: {text}"
    click.echo(log_text(text), err=True)
    sys.exit(exc.exit_code)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgegate")
def cli() -> None:
    """EdgeGate: gate edge ML models before merge.

    Compresses each changed model for each target device, measures size, latency and accuracy,
    checks them against policy files and writes report.json, comment.md and summary.md.

    Exit codes: 0 all gates passed, 1 a gate failed, 2 bad configuration or input, 3 internal error.
    """


CONFIG_HELP = "configuration file (default: the edgegate.yml of this folder or the first folder above it, up to the git root)"
OUT_HELP = "output folder (default: .edgegate-out/ at the repository root)"


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option("--base", help="base commit (default: merge-base with the default branch)")
@click.option("--head", help="head commit (default: HEAD; must be checked out)")
@click.option("--device", "devices", multiple=True, help="gate only on this device (repeatable)")
@click.option("--policy", help="a policy file applied on top of the configured ones")
@click.option("--out", "out_dir", help=OUT_HELP)
@click.option("--calibration", type=click.Path(), help="MODELs' calibration data: .npz/.npy or a "
              "folder of images (replaces edgegate.yml's; no edgegate.yml needed)")
@click.option("--evaluation", type=click.Path(), help="MODELs' evaluation data: .npz with the input "
              "arrays and a 'labels' array, or an image folder with one subfolder per class")
@click.option("--labels", help="name of the labels array in --evaluation (default: labels)")
@click.option("--metric", help="metric on --evaluation: top1 (default), top5, mse, fidelity or "
                               "module:function")
@click.option("--synthetic", is_flag=True, help="calibrate MODELs on random inputs: a first try "
              "only (no accuracy, calibration not representative)")
@click.option("--quiet", "-q", is_flag=True, help="no progress output")
@click.option("--json", "as_json", is_flag=True, help="print a JSON summary on stdout")
@click.option("--keep-work", is_flag=True, help="keep intermediate files under OUT/.work")
@click.option("--only", "only", multiple=True, metavar="MODEL@DEVICE",
              help="gate only this model x device (repeatable): a partial report for 'edgegate merge'")
@click.option("--cache-dir", help="results cache (default: $EDGEGATE_CACHE_DIR, $XDG_CACHE_HOME/edgegate "
                                  "or OUT/cache)")
@click.option("--no-cache", is_flag=True, help="recompute everything; neither read nor write the cache")
@click.option("--baseline", "baseline_mode", type=click.Choice(["auto", "cache", "off"]),
              help="compare with the base commit's result (default: edgegate.yml 'baseline', auto)")
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="also write JUnit XML here: one testcase per model x device x limit")
@click.option("--sarif", "sarif_path", type=click.Path(dir_okay=False),
              help="also write SARIF 2.1.0 here: one result per violation (policy file:line, model)")
def run(models, config_path, base, head, devices, policy, out_dir, calibration, evaluation, labels,
        metric, synthetic, quiet, as_json, keep_work, only, cache_dir, no_cache, baseline_mode,
        junit_path, sarif_path) -> None:
    """Gate MODELs, or the configured models changed between --base and --head."""
    from edgegate.cli import resolve
    from edgegate.progress import make_progress
    from edgegate.gate.run import RunOptions, run_gate

    progress = make_progress(quiet or as_json)
    say = None if quiet or as_json else (lambda text: click.echo(log_text(text), err=True))
    try:
        out = resolve.out_folder(out_dir, resolve.default_root(resolve.config_file(config_path)))
    except EdgeGateError:
        out = Path(out_dir or OUT_DIR)
    try:
        loaded = resolve.load(config_path, models, say)
        loaded = resolve.with_data(loaded, models, calibration, evaluation, labels, metric, synthetic)
    except EdgeGateError as exc:          # edgegate.yml refused: the report still says why
        from edgegate.gate.run import write_error_report

        try:
            write_error_report(exc, out)
        except OSError:                   # an unwritable --out: the error below is still the news
            pass
        _fail(exc)
        return
    if synthetic and say is not None:
        say(f"note: {resolve.SYNTHETIC_NOTE}")
    try:
        if head:
            from edgegate.discover.git import Git

            git = Git(loaded.root)
            if git.is_repo() and git.rev(head) != git.rev("HEAD"):
                raise ConfigError(f"--head {head} is not the checked-out commit",
                                  fix=f"git checkout {head} first, or leave --head out")
        report = run_gate(loaded, RunOptions(models=list(models), base=base, head=head,
                                             devices=list(devices) or None, policy=policy,
                                             keep_workdir=keep_work, only=list(only) or None,
                                             cache_dir=cache_dir, no_cache=no_cache,
                                             baseline=baseline_mode), out, progress)
        _write_junit(report, junit_path, sarif_path)
    except EdgeGateError as exc:
        _fail(exc)
        return
    _print_result(report, out, as_json)
    if synthetic and not as_json:
        click.echo("note: synthetic data: no accuracy was measured and the calibration is not "
                   "representative of real inputs")
    sys.exit(report.exit_code)


def _write_junit(report, junit_path: str | None, sarif_path: str | None = None) -> None:
    """The CI-native files asked for: --junit (JUnit XML) and --sarif (SARIF 2.1.0)."""
    from edgegate.report.junit import write_junit
    from edgegate.report.sarif import write_sarif

    for path, write, what, option in ((junit_path, write_junit, "JUnit", "--junit"),
                                      (sarif_path, write_sarif, "SARIF", "--sarif")):
        if not path:
            continue
        try:
            write(report, Path(path))
        except OSError as exc:
            from edgegate.errors import InputError

            raise InputError(f"cannot write the {what} file: {exc.strerror or exc}", file=path,
                             fix=f"pass a writable path to {option}") from None


def _load(config_path: str | None, models=()):
    from edgegate.cli.resolve import load

    return load(config_path, models)


@cli.command()
@click.argument("models", nargs=-1)
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option("--base", help="base commit (default: merge-base with the default branch)")
@click.option("--head", help="head commit (default: HEAD)")
@click.option("--device", "devices", multiple=True, help="only this device (repeatable)")
@click.option("--policy", help="a policy file applied on top of the configured ones")
@click.option("--github-output", is_flag=True,
              help="also append matrix=<json> and count=<n> to $GITHUB_OUTPUT")
def plan(models, config_path, base, head, devices, policy, github_output) -> None:
    """Print the job matrix (JSON): one entry per changed model x device, for 'run --only'."""
    import os

    from edgegate.gate.matrix import plan as make_plan

    try:
        loaded = _load(config_path, models)
        matrix = make_plan(loaded, None, base=base, head=head, models=list(models),
                           devices=list(devices) or None, policy=policy)
    except EdgeGateError as exc:
        _fail(exc)
        return
    text = json.dumps(matrix, separators=(",", ":"))
    if github_output and os.environ.get("GITHUB_OUTPUT"):
        with open(os.environ["GITHUB_OUTPUT"], "a", encoding="utf-8") as fh:
            fh.write(f"matrix={text}\ncount={matrix['count']}\n")
    click.echo(text)


@cli.command()
@click.argument("partials", nargs=-1, required=True, metavar="DIR_OR_REPORT...")
@click.option("--out", "out_dir", default=OUT_DIR, show_default=True, help="output folder")
@click.option("--config", "config_path", default="edgegate.yml", show_default=True,
              help="orders each model's devices as a single run would (optional)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="also write JUnit XML here: one testcase per model x device x limit")
@click.option("--sarif", "sarif_path", type=click.Path(dir_okay=False),
              help="also write SARIF 2.1.0 here: one result per violation (policy file:line, model)")
def merge(partials, out_dir, config_path, as_json, junit_path, sarif_path) -> None:
    """Combine partial reports (from 'run --only' and 'measure') into one report and verdict."""
    from edgegate.config.load import load_config
    from edgegate.gate.matrix import device_order, merge as merge_reports
    from edgegate.report.model import read_report, write_report
    from edgegate.report.render import write_rendered

    try:
        reports = []
        for p in partials:
            path = Path(p)
            report_path = path / "report.json" if path.is_dir() else path
            reports.append((read_report(report_path), report_path.parent))
        order = None
        if Path(config_path).is_file():
            paths = sorted({m.path for r, _ in reports for m in r.models})
            order = device_order(load_config(config_path).config, paths)
        out = Path(out_dir)
        merged = merge_reports(reports, out, order)
        write_report(merged, out / "report.json")
        write_rendered(merged, out)
        _write_junit(merged, junit_path, sarif_path)
    except EdgeGateError as exc:
        _fail(exc)
        return
    _print_result(merged, out, as_json)
    sys.exit(merged.exit_code)


@cli.command()
@click.argument("partial", metavar="DIR_OR_REPORT")
@click.option("--config", "config_path", help=CONFIG_HELP)
@click.option("--only", "only", multiple=True, metavar="MODEL@DEVICE", help="measure only these")
@click.option("--policy", help="a policy file applied on top of the configured ones")
@click.option("--out", "out_dir", default=".edgegate-measured", show_default=True)
@click.option("--runner-label", envvar="RUNNER_NAME", help="recorded with the numbers [$RUNNER_NAME]")
@click.option("--quiet", "-q", is_flag=True)
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="also write JUnit XML here: one testcase per model x device x limit")
@click.option("--sarif", "sarif_path", type=click.Path(dir_okay=False),
              help="also write SARIF 2.1.0 here: one result per violation (policy file:line, model)")
@click.option("--power", metavar="SOURCE",
              help="power source for energy per inference: tegrastats[:RAIL+RAIL], rapl or "
                   "command:CMD (prints mW); default: the first available")
def measure(partial, config_path, only, policy, out_dir, runner_label, quiet, as_json,
            junit_path, sarif_path, power) -> None:
    """Run a partial report's artifacts on THIS machine (a device runner) and write a partial
    report measured on the device; 'edgegate merge' prefers it over the host's numbers."""
    from edgegate.gate.on_device import measure_report
    from edgegate.progress import make_progress
    from edgegate.report.model import read_report, write_report
    from edgegate.report.render import write_rendered

    try:
        path = Path(partial)
        report_path = path / "report.json" if path.is_dir() else path
        report = read_report(report_path)
        loaded = _load(config_path)
        out = Path(out_dir)
        measured = measure_report(report, report_path.parent, loaded, out, make_progress(quiet or as_json),
                                  list(only) or None, policy, runner_label, power)
        write_report(measured, out / "report.json")
        write_rendered(measured, out)
        _write_junit(measured, junit_path, sarif_path)
    except EdgeGateError as exc:
        _fail(exc)
        return
    _print_result(measured, out, as_json)
    sys.exit(measured.exit_code)


def _print_result(report, out: Path, as_json: bool) -> None:
    from edgegate.cli.table import run_errors, verdict_table

    if as_json:
        click.echo(json.dumps({"verdict": report.verdict, "exit_code": report.exit_code,
                               "report": str(out / "report.json"),
                               "comment": str(out / "comment.md"),
                               "summary": str(out / "summary.md"),
                               "models": [{"path": m.path, "status": m.status,
                                           "results": [{"device": r.device, "status": r.status}
                                                       for r in m.results]}
                                          for m in report.models],
                               "errors": [{"message": e.message, "fix": e.fix} for e in report.errors]},
                              indent=2))
        return
    click.echo(log_text(verdict_table(report)))
    if report.errors:
        click.echo(log_text(run_errors(report)), err=True)
    click.echo(f"\nverdict: {report.verdict.upper()}")
    click.echo(log_text(f"report:  {out / 'report.json'}"))
    click.echo(log_text(f"comment: {out / 'comment.md'}"))
    click.echo(log_text(f"summary: {out / 'summary.md'}"))
    artifacts = out / "artifacts"
    if artifacts.is_dir() and any(artifacts.iterdir()):
        click.echo(log_text(f"artifacts: {artifacts}/"))


@cli.command()
@click.argument("report_path", metavar="REPORT.json")
@click.option("--policy", multiple=True, help="policy file(s) applied on top of the built-in profiles")
@click.option("--out", "out_path", help="write the re-checked report here (default: print only)")
@click.option("--json", "as_json", is_flag=True)
@click.option("--junit", "junit_path", type=click.Path(dir_okay=False),
              help="also write JUnit XML here: one testcase per model x device x limit")
@click.option("--sarif", "sarif_path", type=click.Path(dir_okay=False),
              help="also write SARIF 2.1.0 here: one result per violation (policy file:line, model)")
def check(report_path, policy, out_path, as_json, junit_path, sarif_path) -> None:
    """Re-check a report against policies without recomputing anything."""
    from edgegate.cli.table import run_errors, verdict_table
    from edgegate.config.load import builtin_profiles, load_policy, resolve_devices
    from edgegate.policy.check import check_report
    from edgegate.report.model import read_report, write_report

    try:
        report = read_report(Path(report_path))
        stack = builtin_profiles() + [load_policy(p) for p in policy]
        rechecked = check_report(report, resolve_devices(stack), [d.file for _, d in stack])
        _write_junit(rechecked, junit_path, sarif_path)
    except EdgeGateError as exc:
        _fail(exc)
        return
    if out_path:
        write_report(rechecked, Path(out_path))
    if as_json:
        click.echo(json.dumps({"verdict": rechecked.verdict, "exit_code": rechecked.exit_code}))
    else:
        click.echo(log_text(verdict_table(rechecked)))
        if rechecked.errors:
            click.echo(log_text(run_errors(rechecked)), err=True)
        click.echo(f"\nverdict: {rechecked.verdict.upper()}")
    sys.exit(rechecked.exit_code)


@cli.command()
@click.argument("report_path", metavar="REPORT.json")
@click.option("--format", "fmt", type=click.Choice(["comment", "summary"]), default="comment",
              show_default=True)
@click.option("--templates", type=click.Path(file_okay=False), help="folder of custom templates")
def render(report_path, fmt, templates) -> None:
    """Render comment.md or summary.md from a report.json."""
    from edgegate.report.model import read_report
    from edgegate.report.render import render as render_md, render_comment

    try:
        report = read_report(Path(report_path))
        tdir = Path(templates) if templates else None
        text = render_comment(report, tdir) if fmt == "comment" else render_md(report, "summary", tdir)
    except EdgeGateError as exc:
        _fail(exc)
        return
    click.echo(text, nl=False)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
def targets(as_json) -> None:
    """What can compile and run here, what cannot and why, and how to install what is missing."""
    from edgegate.cli.targets import targets_listing

    click.echo(targets_listing(as_json))


@cli.command()
@click.argument("directory", default=".", required=False, metavar="[DIR]")
@click.option("--force", is_flag=True, help="overwrite files that exist (.gitignore is only appended to)")
@click.option("--device", "devices", multiple=True,
              help="the devices to gate on (repeatable; default x86-cpu; `edgegate targets` lists them)")
def init(directory, force, devices) -> None:
    """Write edgegate.yml, a policy stub, the GitHub workflow and .gitignore lines for DIR (default:
    here), from the models and data files found in it. Existing files are kept unless --force."""
    from edgegate.init import init_repo
    from edgegate.init.texts import describe_inputs, first_ready

    try:
        result = init_repo(Path(directory), force=force, devices=list(devices) or None)
    except EdgeGateError as exc:
        _fail(exc)
        return
    count = len(result.models)
    click.echo(f"found {count} model{'' if count == 1 else 's'}" + (":" if count else ""))
    for model in result.models:
        click.echo(f"  {model.path}  ({model.framework}; {describe_inputs(model)})")
        for data in result.data[model.path]:
            click.echo(f"      data: {data}")
    for name in result.written:
        click.echo(f"wrote:   {name}")
    if result.gitignore:
        click.echo(f"added to .gitignore: {'  '.join(result.gitignore)}")
    for name in result.skipped:
        click.echo(f"skipped: {name} (exists; --force overwrites it)")
    for note in result.notes:
        click.echo(f"note: {note}")
    changed = [*result.written, *([".gitignore"] if result.gitignore else [])]
    cd = "" if result.root.resolve() == Path.cwd().resolve() else f"cd {result.root} && "
    click.echo("next:")
    if result.models:
        click.echo(f"  {cd}edgegate run {first_ready(result.models).path}    # gate it here, now")
    if changed:
        click.echo(f"  {cd}git add {' '.join(changed)} && git commit -m 'EdgeGate'")
    click.echo("  then every pull request that changes a model is gated by the workflow")


@cli.command()
@click.option("--out", "out_dir", default="schemas", show_default=True)
def schema(out_dir) -> None:
    """Write JSON schemas for edgegate.yml, policy files and report.json."""
    from edgegate.config.jsonschema import write_schemas

    for path in write_schemas(Path(out_dir)):
        click.echo(str(path))


@cli.command()
@click.argument("out_dir", default=OUT_DIR, required=False)
@click.option("--tag", required=True, help="release tag (created as a draft release if missing)")
@click.option("--repo", envvar="GITHUB_REPOSITORY", required=True, help="owner/name [$GITHUB_REPOSITORY]")
@click.option("--api-url", envvar="GITHUB_API_URL", default="https://api.github.com", show_default=True,
              help="GitHub API URL [$GITHUB_API_URL]")
@click.option("--token-env", default="GITHUB_TOKEN", show_default=True,
              help="name of the environment variable holding the token (never pass a token as an argument)")
@click.option("--dry-run", is_flag=True, help="list the assets and write SHA256SUMS/manifest.json only")
def publish(out_dir, tag, repo, api_url, token_env, dry_run) -> None:
    """Upload a run's artifacts (OUT_DIR, default .edgegate-out) as release assets of TAG.

    Names are <model>-<device>-<precision>.<ext>, plus SHA256SUMS and manifest.json. The release is
    created as a draft, filled, then published; re-running replaces assets of the same name."""
    import os

    from edgegate.github.releases import check_sizes, collect_assets
    from edgegate.report.model import read_report

    try:
        out = Path(out_dir)
        report = read_report(out / "report.json")
        assets = collect_assets(report, out, out / "release")
        check_sizes(assets)
        for asset in assets:
            click.echo(log_text(f"{asset.sha256}  {asset.size_bytes:>12}  {asset.name}"))
        if dry_run:
            return
        from edgegate.github.client import connect
        from edgegate.github.faults import RetryPolicy
        from edgegate.github.releases import publish as publish_release

        token = os.environ.get(token_env, "")
        throttle = os.environ.get("EDGEGATE_GITHUB_THROTTLE_S")
        gh = connect(token, repo, api_url, retry=RetryPolicy(log=lambda m: click.echo(log_text(m), err=True)),
                     throttle_s=float(throttle) if throttle else None)
        url = publish_release(gh, tag, assets, log=lambda m: click.echo(log_text(m), err=True))
    except EdgeGateError as exc:
        _fail(exc)
        return
    click.echo(log_text(f"release: {url}"))


def main() -> None:
    from edgegate.trust.repo_code import watch_interrupts

    watch_interrupts()       # a real Ctrl-C still stops the run; a KeyboardInterrupt raised by PR code does not
    try:
        cli(standalone_mode=True)
    except EdgeGateError as exc:  # pragma: no cover - commands catch their own
        _fail(exc)
    except Exception:  # a bug: say so, exit 3, never 1 (which means "a gate failed")
        import traceback

        with CommandPause(sys.stderr):   # the trace quotes PR text: shown, never run as commands
            click.echo(log_text(traceback.format_exc()), err=True)
        click.echo("edgegate: internal error (a bug); please report it with the trace above",
                   err=True)
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":
    main()
