"""``simlab-engine``: the engine's command-line contract.

    simlab-engine models [--json] [--path DIR] [REFERENCE ...]
    simlab-engine run [--path DIR] MODEL --<param> VALUE ... --seed INT --replication INT
                      [--horizon T] [--warmup W] [--json]

MODEL is a built-in, a model of an installed plug-in package (entry point group
``simlab.models``), or an import reference ``package.module:ATTRIBUTE`` imported from ``--path``
(default: the current directory). Bad arguments exit 2 with a usage message naming the option; a
failed simulation exits 1 with the error on stderr. Stdout gets one complete document or nothing.
"""

import json
import sys

import click

from engine import registry
from engine.models.base import Model
from engine.parameters import ParameterError
from engine.simulate import simulate
from engine.version import ENGINE_VERSION

_TYPES = {int: click.INT, float: click.FLOAT}


def _option_name(param: str) -> str:
    return "--" + param.replace("_", "-")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(ENGINE_VERSION, prog_name="simlab-engine")
def main() -> None:
    """Run one discrete-event simulation for given parameters, replication and seed."""


_PATH_HELP = ("Directory importable first for 'package.module:ATTRIBUTE' references "
              "[default: the current directory].")


def _path_entries(references: tuple[str, ...], path: str) -> list[registry.ModelEntry]:
    entries = []
    for reference in references:
        try:
            model = registry.load_reference(reference, path)
            entries.append(registry.ModelEntry(model.name, "path", reference, model))
        except registry.ModelError as exc:
            entries.append(registry.ModelEntry(reference, "path", reference, None, exc.reason))
    return entries


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the models as one JSON object.")
@click.option("--path", default=".", show_default=False, type=click.Path(file_okay=False),
              help=_PATH_HELP)
@click.argument("references", nargs=-1)
def models(as_json: bool, path: str, references: tuple[str, ...]) -> None:
    """List every model with its origin (built-in, package, path), parameters (type, default,
    bounds) and metrics: the built-ins, the models of installed plug-in packages (entry point
    group simlab.models; broken ones with their error) and any REFERENCES given as
    'package.module:ATTRIBUTE'."""
    for reference in references:
        if not registry.is_reference(reference):
            raise click.BadParameter(f"{reference!r} is not 'package.module:ATTRIBUTE'",
                                     param_hint="'REFERENCES'")
    entries = registry.list_models() + _path_entries(references, path)
    described = [e.describe() for e in entries]
    if as_json:
        click.echo(json.dumps({"engine_version": ENGINE_VERSION, "models": described}, indent=2))
        return
    for m in described:
        origin = m["origin"] if m["origin"] == "built-in" else f"{m['origin']}: {m['source']}"
        if "error" in m:
            click.echo(f"{m['name']} [{origin}] BROKEN: {m['error']}\n")
            continue
        click.echo(f"{m['name']} [{origin}, version {m['version']}]: {m['description']}")
        click.echo("  parameters:")
        for p in m["parameters"]:
            bounds = []
            if p["minimum"] is not None:
                bounds.append(f"{'>' if p['exclusive_minimum'] else '>='} {p['minimum']}")
            if p["maximum"] is not None:
                bounds.append(f"<= {p['maximum']}")
            default = "infinite" if p["optional"] and p["default"] is None else p["default"]
            click.echo(f"    {_option_name(p['name']):16} {p['type']:5} default {default}, "
                       f"{', '.join(bounds)}: {p['help']}")
        click.echo("  metrics:")
        for metric in m["metrics"]:
            click.echo(f"    {metric['name']:24} {metric['help']}")
        click.echo(f"  default horizon {m['default_horizon']}, warm-up {m['default_warmup']}\n")


class _ModelGroup(click.Group):
    """`run MODEL`: one sub-command per model, built when asked for (plug-ins are imported only
    then, and a broken one fails only its own command)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return [e.name for e in registry.list_models()]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        path = ctx.params.get("path") or "."
        try:
            model = registry.get_model(cmd_name, path)
        except registry.ModelError as exc:
            raise click.UsageError(f"No such command {cmd_name!r}: {exc}", ctx) from None
        return _run_command(model, cmd_name)


@main.group(cls=_ModelGroup)
@click.option("--path", default=".", type=click.Path(file_okay=False), help=_PATH_HELP)
def run(path: str) -> None:
    """Run one simulation of MODEL (see `simlab-engine run MODEL --help`).

    MODEL is a built-in, a model of an installed plug-in package, or an import reference
    'package.module:ATTRIBUTE' (e.g. `simlab-engine run --path ./my_models clinic.model:MODEL
    --seed 1 --replication 0`), imported from --path.
    """


def _run_command(model: Model, command_name: str | None = None) -> click.Command:
    """A `run MODEL` sub-command whose options are the model's parameters."""

    def callback(seed: int, replication: int, horizon: float | None, warmup: float | None,
                 series_interval: float | None, no_crn: bool, as_json: bool, **values) -> None:
        params = {name: value for name, value in values.items() if value is not None}
        try:
            result = simulate(model, params, replication=replication, seed=seed,
                              horizon=horizon, warmup=warmup, series_interval=series_interval,
                              common_random_numbers=not no_crn)
        except ParameterError as exc:
            raise click.BadParameter(str(exc), param_hint=f"'{_option_name(exc.name)}'") from None
        except Exception as exc:  # a failed simulation: exit 1, nothing on stdout
            click.echo(f"Error: simulation failed: {type(exc).__name__}: {exc}", err=True)
            sys.exit(1)
        if as_json:
            click.echo(json.dumps(result.to_dict()))
            return
        click.echo(f"{model.name} replication {replication} seed {seed}: {result.events} events "
                   f"in {result.wall_seconds:.3f} s")
        for name, value in result.metrics.items():
            click.echo(f"  {name:24} {value:.6g}")

    params = [
        click.Option([_option_name(p.name), p.name], type=_TYPES[p.type], default=None,
                     help=f"{p.help} [default: {'infinite' if p.optional else p.default}]")
        for p in model.parameters
    ]
    params += [
        click.Option(["--seed"], type=click.IntRange(min=0), required=True,
                     help="Root entropy of the random streams."),
        click.Option(["--replication"], type=click.IntRange(min=0), required=True,
                     help="Replication number (selects the streams)."),
        click.Option(["--horizon"], type=float, default=None,
                     help=f"Simulated time observed after the warm-up [default: {model.default_horizon}]."),
        click.Option(["--warmup"], type=float, default=None,
                     help=f"Simulated time discarded first [default: {model.default_warmup}]."),
        click.Option(["--series-interval"], type=float, default=None,
                     help="Also record batch means over time with this batch width."),
        click.Option(["--no-crn"], is_flag=True,
                     help="Turn common random numbers off (adds a configuration hash to the key)."),
        click.Option(["--json", "as_json"], is_flag=True, help="Print the record as one JSON object."),
    ]
    return click.Command(command_name or model.name, callback=callback, params=params,
                         help=f"{model.description}", no_args_is_help=True)
