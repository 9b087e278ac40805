"""The ``xr-itslive`` command line.

``xr-itslive invert SOURCE --out STORE [options]`` inverts a cube into a zarr store chunk by
chunk; running the same command again resumes an interrupted store and does nothing on a
finished one. ``--out FILE.nc`` writes one netCDF file instead (CF-1.8, not resumable).
Each subcommand is a ``_add_<name>(subparsers)`` function that registers its parser and sets
``handler`` to a function of the parsed arguments returning the exit status.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from collections.abc import Callable, Sequence
from typing import Any

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_INTERRUPTED = 130


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, json.loads(value)  # numbers, true/false, quoted strings, objects
    except json.JSONDecodeError:
        return key, value


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _lam(text: str) -> float | str | list[float]:
    if text.strip() == "auto":
        return "auto"
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError as err:
        raise argparse.ArgumentTypeError(
            f"expected a number, 'auto' or comma-separated candidates such as '1,10,100', "
            f"got {text!r}"
        ) from err
    return values[0] if len(values) == 1 else values


# --------------------------------------------------------------------------- pair filters


def _names(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _add_pair_filters(parser: argparse.ArgumentParser) -> None:
    """Add the flags of :func:`xr_itslive.filter_pairs` to a subcommand that reads pairs."""
    group = parser.add_argument_group(
        "pair filters (see xr_itslive.filter_pairs; names are ITS_LIVE's, case-insensitive)"
    )
    group.add_argument(
        "--missions",
        nargs="+",
        type=_names,
        metavar="NAME",
        help="keep pairs of these missions: S1 (Sentinel-1), S2 (Sentinel-2), L (Landsat), "
        "S (Sentinel-1 and -2)",
    )
    group.add_argument(
        "--satellites",
        nargs="+",
        type=_names,
        metavar="NAME",
        help="keep pairs of these satellites: L4 L5 L7 L8 L9 S1A S1B S2A S2B ('Landsat 8', "
        "'2A' and mission names work too)",
    )
    group.add_argument(
        "--sensors",
        nargs="+",
        type=_names,
        metavar="NAME",
        help="keep pairs of these sensors: SAR (Sentinel-1), MSI (Sentinel-2), OLI "
        "(Landsat 8/9), ETM+ (Landsat 7), TM (Landsat 4/5), optical",
    )
    group.add_argument(
        "--images",
        choices=("both", "either", "first"),
        default=None,
        help="which images of a pair must match --missions/--satellites/--sensors (both); "
        "'first' for cubes with only satellite_img1, such as the bundled demo cube",
    )
    group.add_argument(
        "--min-days",
        type=float,
        default=None,
        metavar="DAYS",
        help="shortest pair baseline kept, in days",
    )
    group.add_argument(
        "--max-days",
        type=float,
        default=None,
        metavar="DAYS",
        help="longest pair baseline kept, in days",
    )
    group.add_argument(
        "--pairs-start",
        default=None,
        metavar="DATE",
        help="keep pairs whose mid_date is on or after DATE",
    )
    group.add_argument(
        "--pairs-end",
        default=None,
        metavar="DATE",
        help="keep pairs whose mid_date is on or before DATE",
    )
    group.add_argument(
        "--min-valid-fraction",
        type=float,
        default=None,
        metavar="F",
        help="keep pairs with at least this fraction (0-1) of valid pixels (reads the first "
        "variable once)",
    )


def _pair_filters(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of :func:`xr_itslive.filter_pairs` given by the flags of
    :func:`_add_pair_filters` (only those given)."""
    flat = {
        name: [item for group in getattr(args, name) for item in group]
        for name in ("missions", "satellites", "sensors")
        if getattr(args, name) is not None
    }
    scalars = {
        "images": args.images,
        "min_days": args.min_days,
        "max_days": args.max_days,
        "pairs_start": args.pairs_start,
        "pairs_end": args.pairs_end,
        "min_valid_fraction": args.min_valid_fraction,
    }
    return flat | {k: v for k, v in scalars.items() if v is not None}


def _open_filtered(
    source: str, args: argparse.Namespace, variables: list[str], **open_kwargs: Any
) -> Any:
    """Open ``source`` with ``variables`` and what the pair filters of ``args`` read, filter
    the pairs, and keep ``variables``: the cube is the same as without filters but for its
    pairs."""
    from .errors import MissingVariableError
    from .geo.pairs import filter_pairs, filter_variables
    from .io.open import open_cube

    filters = _pair_filters(args)
    if not filters:
        return open_cube(source, variables=variables, **open_kwargs)
    if "min_valid_fraction" in filters:
        filters |= {"variable": variables[0], "mask": getattr(args, "mask", None)}
    keys = ("missions", "satellites", "sensors", "images", "min_valid_fraction", "variable")
    needed = filter_variables(**{k: v for k, v in filters.items() if k in keys})
    extra = [name for name in needed if name not in variables]
    try:
        cube = open_cube(source, variables=[*variables, *extra], **open_kwargs)
    except MissingVariableError as err:
        hint = ""
        if "satellite_img2" in extra:
            hint = " A cube with only satellite_img1 (the bundled demo cube): pass --images first."
        raise MissingVariableError(
            f"the pair filters need the per-pair variables {needed}: {err}{hint}"
        ) from err
    return filter_pairs(cube, **filters).drop_vars(extra)


class _Deprecated(argparse.Action):
    """A flag with an old spelling: the old one still works, with a DeprecationWarning."""

    def __init__(self, *args: Any, old: str, **kwargs: Any) -> None:
        self.old = old
        super().__init__(*args, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: D102
        if option_string == self.old:
            message = (
                f"{self.old} is deprecated and will be removed in the next release; use "
                f"{self.option_strings[0]}"
            )
            # Python hides DeprecationWarning outside __main__: say it on stderr too.
            print(f"{parser.prog}: warning: {message}", file=sys.stderr)
            warnings.warn(message, DeprecationWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


# --------------------------------------------------------------------------- shared options
# The options and the running of the subcommands that fit a cube and write a store
# (invert, composite), defined once.


def _none_first_or_last(default: str, kinds: tuple[str, ...]) -> tuple[str, ...]:
    """The choices of a flag that can be 'none': 'none' first when it is the default."""
    return ("none", *kinds) if default == "none" else (*kinds, "none")


def _add_fit_options(group: Any, defaults: Any) -> None:
    """``--variables``, ``--weights``, ``--robust``, ``--robust-iterations``, ``--engine``,
    with the defaults of the workflow (its ``DEFAULTS`` mapping; without ``weights`` or
    ``robust`` there, as the inversion's, they are off by default)."""
    from .workflows.common import ENGINES

    group.add_argument(
        "--variables",
        nargs="+",
        default=list(defaults["variables"]),
        metavar="VAR",
        help=f"({' '.join(defaults['variables'])})",
    )
    weights = "error" if defaults.get("weights") == "error" else "none"
    group.add_argument(
        "--weights",
        choices=_none_first_or_last(weights, ("error",)),
        default=weights,
        help=f"'error': weight pairs by 1/error² from VAR_error ({weights})",
    )
    robust = defaults.get("robust") or "none"
    robust = "tukey" if robust is True else robust
    group.add_argument(
        "--robust",
        choices=_none_first_or_last(robust, ("tukey", "huber")),
        default=robust,
        help=f"reweighting against outliers ({robust})",
    )
    # off by default, giving --weights turns the weights on; on by default, name the value
    weighted = "--weights" if weights == "none" else "--weights error"
    group.add_argument(
        "--robust-iterations",
        type=_positive_int,
        default=None,
        help=f"reweighting iterations (default: 2 with {weighted}, 4 without)",
    )
    group.add_argument(
        "--engine", choices=ENGINES, default=None, help="kernel engine (default: automatic)"
    )


def _add_running(parser: argparse.ArgumentParser, *, verb: str, chunk_size: bool) -> None:
    """The "running" group: chunks, scheduler, workers, GPU, progress, overwrite, storage.

    ``verb`` says what the GPU does (solve, fit); ``chunk_size`` accepts the deprecated
    ``--chunk-size`` for ``--chunks`` (invert's old spelling).
    """
    run = parser.add_argument_group("running")
    chunks_help = "spatial chunks of N×N pixels, one task each (default: the cube's own chunks"
    if chunk_size:
        run.add_argument(
            "--chunks",
            "--chunk-size",
            dest="chunks",
            action=_Deprecated,
            old="--chunk-size",
            type=_positive_int,
            default=None,
            metavar="N",
            help=f"{chunks_help}; --chunk-size is the deprecated spelling)",
        )
    else:
        run.add_argument(
            "--chunks", type=_positive_int, default=None, metavar="N", help=f"{chunks_help})"
        )
    run.add_argument(
        "--scheduler",
        default=None,
        metavar="ADDRESS",
        help="'threads' (default), 'local' (a LocalCluster) or a scheduler address",
    )
    run.add_argument(
        "--workers", type=_positive_int, default=None, help="workers of a 'local' cluster"
    )
    run.add_argument(
        "--gpu",
        action="store_true",
        help=f"{verb} on the GPU (CuPy, the 'gpu' extra): each chunk is copied there and back",
    )
    run.add_argument("--no-progress", action="store_true", help="no progress bar")
    run.add_argument("--overwrite", action="store_true", help="delete STORE first and start again")
    run.add_argument(
        "--storage-option",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="fsspec option for an output URL (repeatable), e.g. profile=work",
    )


def _weights(args: argparse.Namespace) -> str | None:
    return None if args.weights == "none" else args.weights


def _robust(args: argparse.Namespace) -> bool | str:
    return False if args.robust == "none" else args.robust


def _open_sources(args: argparse.Namespace, sources: Sequence[str]) -> list[Any]:
    """The cubes ``sources``, with the variables the fit reads, in ``--chunks``, filtered."""
    from .workflows.common import needed_variables

    wanted = needed_variables(args.variables, _weights(args))
    chunks = None
    if args.chunks is not None:
        chunks = {"mid_date": -1, "y": args.chunks, "x": args.chunks}
    return [_open_filtered(source, args, wanted, chunks=chunks) for source in sources]


def _cluster_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"n_workers": args.workers} if args.scheduler == "local" else {}


def _write_store(args: argparse.Namespace, write: Callable[..., Any], cube: Any, **kw: Any) -> int:
    """``write(cube, args.out, ...)`` (invert_to_zarr, composite_to_zarr) with the running
    options, on the scheduler of ``--scheduler``; prints what it did."""
    from .workflows.cluster import scheduler_context

    with scheduler_context(args.scheduler, **_cluster_kwargs(args)) as client:
        summary = write(
            cube,
            args.out,
            storage_options=dict(args.storage_option) or None,
            overwrite=args.overwrite,
            scheduler=client if client is not None else args.scheduler,
            progress=not args.no_progress,
            gpu=args.gpu,  # the fit on the device, same writes (see xr_itslive.workflows.device)
            **kw,
        )
    if summary.already_complete:
        print(f"{summary.store} is already complete ({summary.n_chunks} chunks); nothing to do.")
    else:
        resumed = f", {summary.n_skipped} were done before" if summary.n_skipped else ""
        print(
            f"wrote {summary.n_written} of {summary.n_chunks} chunks to {summary.store}"
            f"{resumed}; the store is complete."
        )
    return EXIT_OK


# --------------------------------------------------------------------------- invert


def _add_invert(subparsers: Any) -> None:
    from .workflows.invert import DEFAULTS

    parser = subparsers.add_parser(
        "invert",
        help="invert a cube into a zarr store (resumable) or a netCDF file",
        description=(
            "Invert an ITS_LIVE image-pair cube into regular velocity time series and write "
            "them to a zarr store chunk by chunk. Re-running the same command resumes an "
            "interrupted store; on a finished store it says so and exits 0. An --out ending "
            "in .nc writes one netCDF file instead (CF-1.8): computed whole, then written; "
            "not resumable (a rerun computes it again, and needs --overwrite)."
        ),
    )
    parser.add_argument("source", help="cube: local zarr path, s3:// URL or ITS_LIVE http URL")
    parser.add_argument(
        "--out",
        required=True,
        metavar="STORE",
        help="output zarr path or URL (resumable), or a local .nc file (netCDF, not resumable)",
    )
    group = parser.add_argument_group("inversion (see xr_itslive.invert)")
    group.add_argument(
        "--step",
        type=float,
        default=DEFAULTS["step"],
        help=f"cell length in days ({DEFAULTS['step']:g})",
    )
    group.add_argument(
        "--lam",
        type=_lam,
        default=DEFAULTS["lam"],
        help=f"smoothness weight ({DEFAULTS['lam']:g}); 'auto' or candidates '1,10,100' choose "
        "it per pixel (GCV)",
    )
    group.add_argument(
        "--derivative",
        type=int,
        choices=(1, 2),
        default=DEFAULTS["derivative"],
        help=f"penalized derivative ({DEFAULTS['derivative']})",
    )
    group.add_argument("--start", default=None, help="first date of the grid (default: data)")
    group.add_argument("--end", default=None, help="last date of the grid (default: data)")
    group.add_argument(
        "--min-obs",
        type=_positive_int,
        default=DEFAULTS["min_obs"],
        help=f"fewest valid pairs for a pixel to be solved ({DEFAULTS['min_obs']})",
    )
    group.add_argument(
        "--mask",
        "--outline",
        dest="mask",
        action=_Deprecated,
        old="--outline",
        default=None,
        metavar="FILE",
        help="glacier outline (GeoJSON, shapefile, ...): only pixels inside are solved "
        "(invert's mask=; --outline is the deprecated spelling)",
    )
    group.add_argument(
        "--uncertainty", action="store_true", help="add VAR_std, the posterior standard deviation"
    )
    group.add_argument(
        "--return-outliers",
        action="store_true",
        help="with --robust, add VAR_outlier (mid_date, y, x): the pairs rejected",
    )
    _add_fit_options(group, DEFAULTS)
    _add_running(parser, verb="solve", chunk_size=True)
    _add_pair_filters(parser)
    parser.set_defaults(handler=_run_invert)


#: ``--out`` names ending so are netCDF files; anything else is a zarr store.
NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf")


def _is_netcdf(out: str) -> bool:
    return str(out).lower().endswith(NETCDF_SUFFIXES)


def _invert_to_netcdf(cube: Any, args: argparse.Namespace, invert_kwargs: dict) -> int:
    """``--out FILE.nc``: invert, then write one netCDF file. Not resumable: a netCDF file
    cannot be filled region by region by independent tasks the way a zarr store is, so the
    whole result is computed in one go (streamed to the file chunk by chunk by dask)."""
    import importlib.util
    import os

    from .errors import InvalidParameterError, StoreConflictError
    from .workflows.cluster import local_scheduler_name, scheduler_context
    from .workflows.device import call_on_device
    from .workflows.invert import invert

    path = str(args.out)
    if "://" in path:
        raise InvalidParameterError(
            f"--out {path}: a netCDF output is a local file; for a URL write a zarr store "
            "(e.g. --out s3://bucket/result.zarr)"
        )
    if args.storage_option:
        raise InvalidParameterError(
            "--storage-option is for zarr stores at a URL; a netCDF --out is a local file"
        )
    if os.path.exists(path) and not args.overwrite:
        raise StoreConflictError(
            f"{path} exists; a netCDF output is written whole, not resumed: pass --overwrite "
            "to replace it, or write a zarr store (resumable)"
        )
    result = call_on_device(invert, cube, gpu=args.gpu, **invert_kwargs)
    # netCDF-4 (compressed, any size) where netCDF4 or h5netcdf is installed, else scipy's
    # netCDF-3 writer: results are CF-1.8 and fit all three (xr_itslive.io.cf)
    engine = next(
        (
            e
            for e, m in (("netcdf4", "netCDF4"), ("h5netcdf", "h5netcdf"))
            if importlib.util.find_spec(m)
        ),
        "scipy",
    )
    encoding = {}
    if engine != "scipy":
        # an explicit encoding replaces the variable's own: keep what decoding needs (set by
        # xr_itslive.io.cf), add compression
        kept = ("dtype", "_FillValue", "units", "calendar", "scale_factor", "add_offset")
        encoding = {
            name: {k: v for k, v in var.encoding.items() if k in kept}
            | {"zlib": True, "complevel": 4}
            for name, var in result.data_vars.items()
            if var.ndim >= 2
        }
    partial = f"{path}.partial"  # a killed run leaves no file that looks finished
    with scheduler_context(args.scheduler, **_cluster_kwargs(args)) as client:
        delayed = result.to_netcdf(partial, engine=engine, encoding=encoding, compute=False)
        if client is not None:
            client.compute(delayed).result()
        else:
            import dask
            from dask.diagnostics import ProgressBar

            if args.no_progress:
                dask.compute(delayed, scheduler=local_scheduler_name(args.scheduler))
            else:
                with ProgressBar():
                    dask.compute(delayed, scheduler=local_scheduler_name(args.scheduler))
    os.replace(partial, path)
    print(f"wrote {path} (netCDF, {engine}); not resumable: a rerun computes it again.")
    return EXIT_OK


def _run_invert(args: argparse.Namespace) -> int:
    from .workflows.invert_to_zarr import invert_to_zarr

    (cube,) = _open_sources(args, [args.source])
    invert_kwargs = dict(
        variables=args.variables,
        step=args.step,
        lam=args.lam,
        derivative=args.derivative,
        start=args.start,
        end=args.end,
        min_obs=args.min_obs,
        mask=args.mask,
        engine=args.engine,
        weights=_weights(args),
        robust=_robust(args),
        robust_iterations=args.robust_iterations,
        uncertainty=args.uncertainty,
        return_outliers=args.return_outliers,
    )
    if _is_netcdf(args.out):
        return _invert_to_netcdf(cube, args, invert_kwargs)
    return _write_store(args, invert_to_zarr, cube, **invert_kwargs)


# --------------------------------------------------------------------------- composite


def _add_composite(subparsers: Any) -> None:
    from .workflows.composite import DEFAULTS

    parser = subparsers.add_parser(
        "composite",
        help="ITS_LIVE's annual and climatological composites of a cube into a zarr store "
        "(resumable)",
        description=(
            "Fit one mean per calendar year and one annual sinusoid to every pixel's image "
            "pairs (ITS_LIVE's annual composites: vx, vy, v per year; vx0, dv_dt, v_amp, "
            "v_phase ... over the climatology years) and write them to a zarr store chunk by "
            "chunk. Re-running the same command resumes an interrupted store; on a finished "
            "store it says so and exits 0."
        ),
    )
    parser.add_argument(
        "source",
        nargs="+",
        help="cube: local zarr path, s3:// URL or ITS_LIVE http URL; several cubes of one CRS "
        "make one mosaic (xr_itslive.workflows.composite.composite_mosaic)",
    )
    parser.add_argument("--out", required=True, metavar="STORE", help="output zarr path or URL")
    group = parser.add_argument_group("composite (see xr_itslive.composite)")
    group.add_argument("--start", default=None, help="drop pairs before this date")
    group.add_argument("--end", default=None, help="drop pairs after this date")
    first, last = DEFAULTS["climatology"]
    group.add_argument(
        "--climatology",
        nargs=2,
        type=int,
        default=list(DEFAULTS["climatology"]),
        metavar=("FIRST", "LAST"),
        help=f"first and last climatology year, both included ({first} {last})",
    )
    group.add_argument(
        "--center-date",
        default=None,
        metavar="DATE",
        help="centre of the line through the annual means (default: the window's middle)",
    )
    group.add_argument(
        "--min-obs",
        type=_positive_int,
        default=DEFAULTS["min_obs"],
        help=f"fewest pairs of a fit ({DEFAULTS['min_obs']})",
    )
    group.add_argument(
        "--min-year-obs",
        type=_positive_int,
        default=DEFAULTS["min_year_obs"],
        help=f"fewest pairs overlapping a year for its mean ({DEFAULTS['min_year_obs']})",
    )
    _add_fit_options(group, DEFAULTS)
    _add_running(parser, verb="fit", chunk_size=False)
    _add_pair_filters(parser)
    parser.set_defaults(handler=_run_composite)


def _run_composite(args: argparse.Namespace) -> int:
    from .workflows.composite import composite_to_zarr

    cubes = _open_sources(args, args.source)
    return _write_store(
        args,
        composite_to_zarr,
        cubes[0] if len(cubes) == 1 else cubes,
        start=args.start,
        end=args.end,
        climatology=tuple(args.climatology),
        center_date=args.center_date,
        weights=_weights(args),
        robust=_robust(args),
        robust_iterations=args.robust_iterations,
        variables=args.variables,
        min_obs=args.min_obs,
        min_year_obs=args.min_year_obs,
        engine=args.engine,
    )


# --------------------------------------------------------------------------- demo


def _add_demo(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="invert the bundled real cube subset, print a summary, save a plot",
        description=(
            "Invert the bundled 3x3-pixel subset of a real ITS_LIVE cube (robust, "
            "error-weighted, with uncertainty), print a summary, and write the result "
            "(zarr) and a plot of the centre pixel (pairs, inverted series, GP) to --out."
        ),
    )
    from .demo import DEMO_DEFAULTS as DEFAULTS

    out, step, lam = DEFAULTS["out_dir"], DEFAULTS["step"], DEFAULTS["lam"]
    parser.add_argument("--out", default=out, help=f"output folder ({out})")
    parser.add_argument("--step", type=float, default=step, help=f"cell length in days ({step:g})")
    parser.add_argument("--lam", type=float, default=lam, help=f"smoothness weight ({lam:g})")
    parser.set_defaults(handler=_run_demo)


def _run_demo(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    from .demo import run_demo

    run_demo(args.out, step=args.step, lam=args.lam)
    return EXIT_OK


# --------------------------------------------------------------------------- parser

#: Subcommands, in the order ``--help`` lists them.
SUBCOMMANDS: list[Callable[[Any], None]] = [_add_composite, _add_demo, _add_invert]


def build_parser() -> argparse.ArgumentParser:
    """The ``xr-itslive`` parser with every subcommand of :data:`SUBCOMMANDS`."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="xr-itslive",
        description="ITS_LIVE image-pair velocity cubes to regular velocity time series.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``xr-itslive`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status.

    Errors of xr_itslive (bad parameters, a store holding another run, an unreachable
    scheduler...) print their message and return 1; argument errors exit with 2.
    """
    from .errors import ITSLiveError

    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except ITSLiveError as err:
        print(f"xr-itslive {args.command}: error: {err}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print(
            f"xr-itslive {args.command}: interrupted; run the same command again to resume.",
            file=sys.stderr,
        )
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
