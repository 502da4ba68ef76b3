"""Train and evaluate one expid: ``python run_expid.py --expid DIN_LAIN_synthetic``.

Builds the dataset if it is missing (synthetic) or says how to get it (real datasets), trains with
early stopping on the validation split, evaluates valid and test overall and per length bucket, and
appends one row to the results CSV (default ``results/results.csv``).
"""
import os
import sys

from lainctr.runtime import configure_cpu_runtime

configure_cpu_runtime()  # before torch loads: passive OpenMP waiting, malloc that reuses activations

from lainctr.analysis.ablation import ablation_overrides  # noqa: E402 (after the runtime settings)
from lainctr.config import ConfigError
from lainctr.distributed import leave_process_group
from lainctr.errors import USER_ERRORS, CommandLineParser
from lainctr.experiment import DatasetMissingError, run_experiment
from lainctr.lain_presets import LAIN_PRESETS
from lainctr.paths import MODEL_DIRS_ENV
from lainctr.trainer import Preempted, TrainingError
from lainctr.training_options import OptionError


def main(argv=None) -> int:
    parser = CommandLineParser(prog="run_expid.py", description=__doc__)
    parser.add_argument("--expid", required=True, help="<Model>_<dataset>, e.g. TWIN_LAIN_kuaivideo")
    parser.add_argument("--config", default=None,
                        help="a directory of your own expid YAML files, read besides the zoo's (an expid may say "
                             "base_expid: <a zoo expid> and override a few keys); its base_config.yaml, "
                             "dataset_config.yaml and datasets_*.yaml extend the zoo's")
    parser.add_argument("--gpu", type=int, default=-1, help="-1 = CPU, N = cuda:N")
    parser.add_argument("--data_root", default=None, help="root of the dataset folders (default $LAINCTR_DATA_ROOT or ./data)")
    parser.add_argument("--results", default=None, help="results CSV to append to")
    parser.add_argument("--resume", default=None, metavar="RUN_DIR",
                        help="continue an interrupted run (SIGTERM, crash) from its run directory's last.ckpt")
    parser.add_argument("--model_dir", action="append", default=[],
                        help="a folder of your own model folders (<Model>/<Model>.py, <Model>/config/*.yaml), "
                             "searched after the zoo's; repeatable; also $LAINCTR_MODEL_DIRS")
    parser.add_argument("--seed", type=int, default=None, help="override the expid's seed")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default=None,
                        help="bf16: autocast forward passes (meant for CUDA; fp32 weights, softmaxes, losses, metrics)")
    parser.add_argument("--out_of_core", action="store_true",
                        help="leave the sample columns in the split files and read each batch's rows from disk "
                             "(out_of_core: True); sequences and item table stay in memory")
    parser.add_argument("--ablation", default=None, choices=list(ablation_overrides()),
                        help="LAIN ablation variant of a _LAIN expid (spec section 6); tags the results row")
    parser.add_argument("--lain_preset", default=None, choices=sorted(LAIN_PRESETS),
                        help="LAIN size preset of a _LAIN expid (default: the expid's; lean = the spec's lean sizes, "
                             "paper = the paper's selected setting)")
    args = parser.parse_args(argv)
    if args.model_dir:
        os.environ[MODEL_DIRS_ENV] = os.pathsep.join(args.model_dir + [os.environ.get(MODEL_DIRS_ENV, "")]).strip(os.pathsep)
    overrides = {"seed": args.seed} if args.seed is not None else {}
    if args.precision:
        overrides["precision"] = args.precision
    if args.lain_preset:  # on a non-LAIN expid an unknown key: a ConfigError below
        overrides["lain_preset"] = args.lain_preset
    if args.out_of_core:
        overrides["out_of_core"] = True
    if args.ablation:  # on a non-LAIN expid the switches are unknown keys: a ConfigError below
        overrides.update(ablation_overrides()[args.ablation])
    try:
        run_experiment(args.expid, config_dir=args.config, gpu=args.gpu, data_root=args.data_root,
                       overrides=overrides, results_file=args.results,
                       tag=f"ablation:{args.ablation}" if args.ablation else None, resume=args.resume)
    except Preempted as stopped:
        print(f"{stopped}; continue with --resume {os.path.dirname(str(stopped).rsplit(' ', 1)[-1])}", file=sys.stderr)
        return 143
    except (ConfigError, DatasetMissingError, OptionError, TrainingError) + USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        leave_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
