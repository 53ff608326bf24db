"""``vqdna <subcommand>``: the entry point of every workflow rule, and of users.

Each subcommand is one stage; ``vqdna <subcommand> --help`` documents it. User
errors (bad input, checksum mismatch, wrong tokenizer) print one line and
exit with status 1.

Every subcommand is a pair of functions: ``<name>_arguments`` declares its
flags and ``cmd_<name>`` runs it; :data:`SUBCOMMANDS` lists the pairs in the
order ``vqdna --help`` shows them. Handlers import their stage lazily, so
``vqdna --help`` does not load torch.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from vqdna import VqdnaError, __version__

MIRROR_HELP = "offline mirror folder searched by file name first (default: $VQDNA_MIRROR)"
SPEC_HELP = "the dataset's row of the datasets sheet as JSON"
DATASET_HELP = "dataset folder ({train,dev,test}.parquet)"
CODES_HELP = "dataset folder ({train,dev,test}.parquet), or its dataset tokens made with this tokenizer (tokenize-dataset)"


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected GENOME=PATH, got {text!r}")
    return key, value


def _compute_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--device", default=None, help="torch device, e.g. cpu or cuda:0 (default: cuda if available)")


# -- sources ---------------------------------------------------------------------------------------


def download_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--genome", required=True, help="genome id (names the outputs)")
    p.add_argument("--source", required=True, help="http(s)/ftp URL or local path of a FASTA (plain, gzip or bgzip)")
    p.add_argument("--sha256", default=None, help="expected sha256 of the raw file; recorded when omitted")
    p.add_argument("--mirror", default=None, help=MIRROR_HELP)
    p.add_argument("--output", required=True, help="output .fa.gz (the .fai, .gzi and {genome}.source.json go beside it)")


def cmd_download(args: argparse.Namespace) -> None:
    from vqdna.download import fetch_genome

    record = fetch_genome(args.genome, args.source, args.output, sha256=args.sha256, mirror=args.mirror)
    logging.info("%s: %d contigs, %d bp from %s (sha256 %s)", args.genome, record["contigs"], record["length"], record["fetched_from"], record["sha256"])


def fetch_file_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--what", default="file", help="what the file is, for error messages")
    p.add_argument("--source", required=True, help="http(s)/ftp URL or local path")
    p.add_argument("--sha256", default=None, help="expected sha256; recorded in OUTPUT.source.json when omitted")
    p.add_argument("--mirror", default=None, help=MIRROR_HELP)
    p.add_argument("--output", required=True, help="output file")


def cmd_fetch_file(args: argparse.Namespace) -> None:
    from vqdna.download import fetch_file

    record = fetch_file(args.what, args.source, args.output, sha256=args.sha256, mirror=args.mirror)
    logging.info("%s: %d bytes from %s (sha256 %s)", args.output, record["bytes"], record["fetched_from"], record["sha256"])


def fetch_archive_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--source", required=True, help="http(s)/ftp URL, Google Drive link or local path of a .zip")
    p.add_argument("--sha256", default=None, help="expected sha256 of the archive; recorded in OUTPUT.source.json when omitted")
    p.add_argument("--mirror", default=None, help=MIRROR_HELP)
    p.add_argument("--output", required=True, help="output .zip")


def cmd_fetch_archive(args: argparse.Namespace) -> None:
    from vqdna.archive import fetch_archive

    record = fetch_archive(args.source, Path(args.output), sha256=args.sha256 or "", mirror=args.mirror)
    logging.info("%s: %d bytes from %s (sha256 %s)", args.output, record["bytes"], record["fetched_from"], record["sha256"])


def unpack_archive_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--archive", required=True, help="the .zip")
    p.add_argument("--output", required=True, help="output folder")


def cmd_unpack_archive(args: argparse.Namespace) -> None:
    from vqdna.archive import unpack_archive

    record = unpack_archive(Path(args.archive), Path(args.output))
    logging.info("%s: %d files, %d bytes unpacked", args.output, record["members"], record["bytes"])


def windows_arguments(p: argparse.ArgumentParser) -> None:
    from vqdna.windows import WindowSettings

    w = WindowSettings
    p.add_argument("--genome", required=True)
    p.add_argument("--fasta", required=True, help="bgzip FASTA with .fai/.gzi (the output of 'vqdna download')")
    p.add_argument("--output", required=True, help="output windows .parquet")
    p.add_argument("--length", type=int, default=w.length, help=f"window length in nt (default {w.length})")
    p.add_argument("--step", type=int, default=w.step, help=f"distance between window starts (default {w.step})")
    p.add_argument("--max-n-fraction", type=float, default=w.max_n_fraction, help=f"drop windows with a larger N fraction (default {w.max_n_fraction})")
    p.add_argument("--dev-fraction", type=float, default=w.dev_fraction, help=f"share of each contig held out as dev (default {w.dev_fraction})")
    p.add_argument("--test-fraction", type=float, default=w.test_fraction, help=f"share of each contig held out as test (default {w.test_fraction})")
    p.add_argument("--reverse-complement", action="store_true", help="also emit every window's reverse complement")


def cmd_windows(args: argparse.Namespace) -> None:
    from vqdna.windows import WindowSettings, write_windows

    settings = WindowSettings(
        length=args.length,
        step=args.step,
        max_n_fraction=args.max_n_fraction,
        dev_fraction=args.dev_fraction,
        test_fraction=args.test_fraction,
        reverse_complement=args.reverse_complement,
    )
    counts = write_windows(args.fasta, args.output, args.genome, settings)
    logging.info("%s: windows per split %s", args.genome, counts)


# -- tokenizers ------------------------------------------------------------------------------------


def train_tokenizer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="tokenizer name (the config's tokenizers: key)")
    p.add_argument("--settings", type=_json, required=True, help="the tokenizer's config entry as JSON")
    p.add_argument("--windows", nargs="+", required=True, help="windows .parquet files of its train_genomes")
    p.add_argument("--output", required=True, help="output folder (config.json, the model, training.json, curves)")
    _compute_options(p)


def cmd_train_tokenizer(args: argparse.Namespace) -> None:
    from vqdna.tokenizer.train import train_tokenizer

    summary = train_tokenizer(args.name, args.settings, args.windows, args.output, threads=args.threads, device=args.device)
    logging.info("tokenizer %s trained in %.0f s: %s", args.name, summary["train_seconds"], summary.get("tokenizer_hash"))


def evaluate_tokenizer_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--windows", nargs="+", required=True, help="windows .parquet files of its train_genomes (test split measured)")
    p.add_argument("--settings", type=_json, default={}, help="evaluation settings as JSON (heldout_windows, probe_windows, seed)")
    p.add_argument("--output", required=True, help="output metrics.json")
    _compute_options(p)


def cmd_evaluate_tokenizer(args: argparse.Namespace) -> None:
    from vqdna.tokenizer.evaluate import evaluate_tokenizer

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    result = evaluate_tokenizer(args.tokenizer, args.windows, args.settings, args.output)
    for level in result["levels"]:
        probe = level.get("neighbour_probe", {}).get("mean")
        logging.info(
            "level %d: held-out reconstruction %.4f, usage %.3f, perplexity %.1f%s",
            level["level"], level["reconstruction_accuracy"], level["usage"], level["perplexity"],
            f", neighbour probe {probe:.3f}" if probe is not None else "",
        )


def tokenize_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--name", required=True, help="tokenizer name, stamped into the file")
    p.add_argument("--windows", required=True)
    p.add_argument("--output", required=True)
    _compute_options(p)


def cmd_tokenize(args: argparse.Namespace) -> None:
    from vqdna.tokenizer.tokens import tokenize_windows

    rows = tokenize_windows(args.tokenizer, args.name, args.windows, args.output, threads=args.threads, device=args.device)
    logging.info("%s: %d windows tokenized", args.output, rows)


# -- pretraining -----------------------------------------------------------------------------------


def pretrain_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, help="run name (the config's runs: key)")
    p.add_argument("--settings", type=_json, required=True, help="the run's config entry as JSON")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder the token files were made with")
    p.add_argument("--tokens", nargs="+", required=True, help="token .parquet files of its pretrain_genomes")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument(
        "--state", default=None,
        help="folder for resumable checkpoints (the workflow uses results/pretrain_state/RUN); a rerun resumes from it",
    )
    p.add_argument(
        "--processes", type=int, default=1,
        help="data-parallel processes on this node (one per GPU); above 1 the command restarts itself under torchrun",
    )
    p.add_argument(
        "--nodes", type=int, default=1,
        help="nodes of the run; above 1 in a SLURM job the command starts itself once per node with srun (elsewhere, start it "
        "once per node yourself): they meet at a rendezvous",
    )
    p.add_argument(
        "--rdzv-endpoint", default=None,
        help="HOST:PORT the nodes meet at (default: $VQDNA_RDZV_ENDPOINT, else the SLURM job's first node, port 29400)",
    )
    _compute_options(p)


def cmd_pretrain(args: argparse.Namespace) -> None:
    if (args.processes > 1 or args.nodes > 1) and "LOCAL_RANK" not in os.environ:  # not started by torchrun yet
        from vqdna.distributed import srun_per_node_command, torchrun_command

        # exec, not a child: SLURM's SIGTERM then reaches srun and torchrun, which pass it to every rank.
        per_node = srun_per_node_command(args.nodes, args.threads) if args.nodes > 1 else None
        if per_node is not None:
            os.execvp(per_node[0], [*per_node, sys.executable, "-m", "vqdna", *args.argv])
        launch = torchrun_command(args.processes, args.nodes, args.rdzv_endpoint)
        os.execv(sys.executable, [*launch, "-m", "vqdna", *args.argv])
    from vqdna.lm.pretrain import pretrain

    result = pretrain(
        args.name, args.settings, args.tokenizer, args.tokens, args.output,
        state_dir=args.state, threads=args.threads, device=args.device,
    )
    logging.info("run %s: held-out masked-code accuracy per level %s", args.name, result["heldout_masked_accuracy"])


# -- datasets and fine-tuning ----------------------------------------------------------------------


def prepare_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_json, required=True, help=SPEC_HELP)
    p.add_argument("--windows", type=_key_value, nargs="*", default=[], metavar="GENOME=PATH", help="windows files of a genome-classification dataset")
    p.add_argument("--fastas", type=_key_value, nargs="*", default=[], metavar="GENOME=PATH", help="bgzip FASTAs of a species dataset")
    p.add_argument(
        "--assembly-reports", type=_key_value, nargs="*", default=[], metavar="GENOME=PATH",
        help="NCBI assembly reports of a species dataset's genomes (accession -> chromosome)",
    )
    p.add_argument("--archives-dir", default="resources/archives", help="unpacked archives, for sources archive:NAME/FOLDER")
    p.add_argument("--output", required=True, help="output folder ({train,dev,test}.parquet)")


def cmd_prepare_dataset(args: argparse.Namespace) -> None:
    from vqdna.datasets.prepare import prepare_dataset
    from vqdna.datasets.spec import DatasetSpec

    counts = prepare_dataset(
        DatasetSpec(**args.spec), args.output, {g: Path(p) for g, p in args.windows}, args.archives_dir,
        fastas={g: Path(p) for g, p in args.fastas}, assembly_reports={g: Path(p) for g, p in args.assembly_reports},
    )
    logging.info("dataset %s: rows per split %s", args.spec["dataset"], counts)


def tokenize_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--name", required=True, help="tokenizer name, stamped into the files")
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--max-length", type=int, required=True, help="cut every sequence to this many nt first (the sheet's max_length)")
    p.add_argument("--output", required=True, help="output folder ({train,dev,test}.parquet: index, label, codes_l1...)")
    _compute_options(p)


def cmd_tokenize_dataset(args: argparse.Namespace) -> None:
    from vqdna.dataset_tokens import tokenize_dataset

    rows = tokenize_dataset(args.tokenizer, args.name, args.dataset, args.max_length, args.output, threads=args.threads, device=args.device)
    logging.info("%s: rows per split %s", args.output, rows)


def finetune_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_json, required=True, help=SPEC_HELP)
    p.add_argument("--settings", type=_json, required=True, help="the config's finetune: block as JSON")
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--pretrained", required=True, help="pretrained model folder")
    p.add_argument("--tokenizer", required=True, help="tokenizer folder the model was pretrained with")
    p.add_argument("--dataset", required=True, help=CODES_HELP)
    p.add_argument("--output", required=True, help="output folder (metrics.json, predictions.parquet, adapter/ or model/)")
    _compute_options(p)


def cmd_finetune(args: argparse.Namespace) -> None:
    from vqdna.datasets.spec import DatasetSpec
    from vqdna.finetune.train import finetune

    result = finetune(
        DatasetSpec(**args.spec), args.settings, args.seed, args.pretrained, args.tokenizer, args.dataset, args.output,
        threads=args.threads, device=args.device,
    )
    logging.info("%s seed %d: test %s", result["dataset"], args.seed, result["test"])


# -- baselines and reports -------------------------------------------------------------------------


def analyse_codebook_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tokenizer", required=True, help="a learned (vq or hrq) tokenizer folder")
    p.add_argument("--tokens", required=True, help="the dataset's tokens made with this tokenizer (tokenize-dataset)")
    p.add_argument("--dataset", required=True, help=DATASET_HELP + ": class names, and genome coordinates where it has them")
    p.add_argument("--settings", type=_json, default={}, help="the config's analysis: settings block as JSON")
    p.add_argument("--output", required=True, help="output folder (profiles, embedding, enriched_codes, code_offsets .parquet; plots; summary.json)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads of the numerical libraries (default: their choice)")


def cmd_analyse_codebook(args: argparse.Namespace) -> None:
    from threadpoolctl import threadpool_limits

    from vqdna.evaluation.codebook_analysis import analyse_codebook

    with threadpool_limits(args.threads):
        summary = analyse_codebook(args.tokenizer, args.tokens, args.dataset, args.output, args.settings)
    for level in summary["levels"]:
        logging.info("level %d: silhouette of the classes on the map %s, %d significant (class, code) pairs",
                     level["level"], level["silhouette_2d"], level["significant_codes"])


PLOTS = ("tokenizer", "pretraining", "finetuning", "tables", "runtime")


def plot_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("kind", choices=PLOTS, help="what to draw")
    p.add_argument("--metrics", help="tokenizer, pretraining: its metrics.json")
    p.add_argument("--curves", help="tokenizer (learned), pretraining: its curves.csv")
    p.add_argument("--dataset", help="finetuning: the dataset's name (the title)")
    p.add_argument("--finetuned", nargs="*", default=[], help="finetuning: every metrics.json of the dataset's fine-tuning jobs")
    p.add_argument("--floors", nargs="*", default=[], help="finetuning: the dataset's k-mer floor metrics.json")
    p.add_argument("--probes", nargs="*", default=[], help="finetuning: the dataset's linear-probe metrics.json files")
    p.add_argument("--draw-of", default="{}", help="finetuning: JSON, run or tokenizer -> the entry its draw remakes (draws:)")
    p.add_argument("--tables", nargs="*", default=[], help="tables: the tidy table CSVs")
    p.add_argument("--benchmarks", help="runtime: the folder of benchmark TSVs (logs/benchmarks)")
    p.add_argument("--output", required=True, help="the PNG (tables, runtime: HTML) to write")


def cmd_plot(args: argparse.Namespace) -> None:
    from vqdna import plots

    needed = {"tokenizer": ["metrics"], "pretraining": ["metrics", "curves"], "finetuning": ["dataset"], "runtime": ["benchmarks"]}
    missing = [f"--{name}" for name in needed.get(args.kind, []) if not getattr(args, name)]
    if missing:
        raise VqdnaError(f"plot {args.kind}: give {', '.join(missing)}")
    if args.kind == "tokenizer":
        plots.plot_tokenizer(args.metrics, args.output, args.curves)
    elif args.kind == "pretraining":
        plots.plot_pretraining(args.metrics, args.curves, args.output)
    elif args.kind == "finetuning":
        plots.plot_finetuning(args.dataset, args.finetuned, args.floors, args.probes, args.output, json.loads(args.draw_of))
    elif args.kind == "tables":
        plots.tables_html(args.tables, args.output)
    else:
        plots.runtime_html(args.benchmarks, args.output)
    logging.info("wrote %s", args.output)


def kmer_baseline_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--spec", type=_json, required=True, help=SPEC_HELP)
    p.add_argument("--settings", type=_json, default=None, help="the config's kmer_baseline: block as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dataset", required=True, help=DATASET_HELP)
    p.add_argument("--output", required=True, help="output folder (metrics.json, predictions.parquet)")


def cmd_kmer_baseline(args: argparse.Namespace) -> None:
    from vqdna.datasets.spec import DatasetSpec
    from vqdna.evaluation.kmer_baseline import kmer_baseline

    result = kmer_baseline(DatasetSpec(**args.spec), Path(args.dataset), Path(args.output), settings=args.settings, seed=args.seed)
    logging.info("%s k-mer baseline: test %s", result["dataset"], result["test"])


def probe_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--features", choices=["tokenizer", "encoder"], default="tokenizer")
    p.add_argument("--spec", type=_json, required=True, help=SPEC_HELP)
    p.add_argument("--settings", type=_json, default=None, help="the config's probe: block as JSON")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tokenizer", required=True, help="tokenizer folder")
    p.add_argument("--pretrained", default=None, help="encoder folder (encoder features only)")
    p.add_argument("--dataset", required=True, help=CODES_HELP)
    p.add_argument("--output", required=True, help="output folder (metrics.json, predictions.parquet)")
    _compute_options(p)


def cmd_probe(args: argparse.Namespace) -> None:
    from vqdna.datasets.spec import DatasetSpec
    from vqdna.evaluation.probe import linear_probe

    result = linear_probe(
        DatasetSpec(**args.spec), Path(args.dataset), Path(args.output), tokenizer_dir=args.tokenizer,
        pretrained_dir=args.pretrained, features=args.features, settings=args.settings, seed=args.seed,
        threads=args.threads, device=args.device,
    )
    logging.info("%s %s: test %s", result["dataset"], result["method"], result["test"])


def tables_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--plan", required=True, help="JSON (or a file of it): runs and tokenizers, their types and ablation values")
    p.add_argument(
        "--published", default=str(Path(__file__).resolve().parents[1] / "resources" / "published"),
        help="folder of the paper's tables as CSV (default: the repository's resources/published)",
    )
    p.add_argument("--output-dir", required=True, help="folder for table1..7, comparison, paired and summary .csv/.md")
    p.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates of the paired comparisons (default 1000)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples (default 0)")
    p.add_argument(
        "results", nargs="*",
        help="metrics.json files under results/{finetune,kmer_baseline,probe,tokenizers,pretrain}/ (predictions.parquet beside them)",
    )


def cmd_tables(args: argparse.Namespace) -> None:
    from vqdna.evaluation.compare import write_comparison_tables
    from vqdna.tables import read_plan, write_paper_tables, write_tables

    plan = read_plan(args.plan)
    rows = write_tables(args.results, Path(args.output_dir) / "summary.csv", Path(args.output_dir) / "summary.md")
    written = write_paper_tables(args.results, plan, args.published, args.output_dir)
    written |= write_comparison_tables(args.results, plan, args.output_dir, replicates=args.replicates, seed=args.seed)
    logging.info("summary of %d (run, dataset) results and %s written to %s", len(rows), ", ".join(written), args.output_dir)


# -- for users: inference and inspection -----------------------------------------------------------


def _inference_options(p: argparse.ArgumentParser, model_help: str, output_help: str) -> None:
    p.add_argument("--tokenizer", required=True, help="tokenizer folder the model was pretrained with")
    p.add_argument("--model", required=True, help=model_help)
    p.add_argument("--input", required=True, help="FASTA (.fa/.fasta/.fna/.fas) or CSV with a 'sequence' column (optional 'id', 'label'); plain or .gz")
    p.add_argument("--output", required=True, help=output_help)
    p.add_argument("--pretrained", default=None, help="a fine-tuned run's pretrained folder, when it has moved (default: the path its adapter recorded)")
    p.add_argument("--batch-size", type=int, default=64, help="sequences per forward pass (default 64)")
    _compute_options(p)


def embed_arguments(p: argparse.ArgumentParser) -> None:
    _inference_options(
        p,
        "pretrained folder (results/pretrain/RUN) or fine-tuned run folder (with adapter/: its LoRA-adapted encoder)",
        "output .parquet",
    )
    p.add_argument("--chunk-length", type=int, default=None, help="encode long sequences in pieces of this many tokens and average over all tokens (default: whole sequences)")


def cmd_embed(args: argparse.Namespace) -> None:
    from vqdna.predict import embed

    embed(
        args.tokenizer, args.model, args.input, args.output, batch_size=args.batch_size, chunk_length=args.chunk_length,
        pretrained_dir=args.pretrained, threads=args.threads, device=args.device,
    )


def predict_arguments(p: argparse.ArgumentParser) -> None:
    _inference_options(
        p,
        "fine-tuned run folder (results/finetune/RUN/DATASET/seedN, with adapter/)",
        "output .csv or .parquet: id, label (if the input has one), prediction, probability_K per class",
    )
    p.add_argument("--max-length", type=int, default=None, help="cut sequences to this many nt, as fine-tuning did (default: the run's max_length when its metrics.json records it, else no cut)")


def cmd_predict(args: argparse.Namespace) -> None:
    from vqdna.predict import predict

    predict(
        args.tokenizer, args.model, args.input, args.output, max_length=args.max_length, batch_size=args.batch_size,
        pretrained_dir=args.pretrained, threads=args.threads, device=args.device,
    )


def inspect_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("path")
    p.add_argument("--rows", type=int, default=5, help="rows to show (default 5)")
    p.add_argument("--no-summary", action="store_true", help="skip the summaries that read the whole file (huge files)")
    p.add_argument("--decode", type=int, default=None, metavar="ROW", help="decode token row ROW (0-based) beside its reference window, and nothing else")
    p.add_argument(
        "--tokenizer", default=None, metavar="DIR",
        help="tokenizer folder (its hash must match the file's); default for --decode: results/tokenizers/{vqdna.tokenizer}; "
        "for the summary it gives the true vocabulary sizes",
    )
    p.add_argument("--windows", default=None, metavar="PATH", help="windows file of --decode (default: results/windows/{vqdna.genome}.parquet)")


def cmd_inspect(args: argparse.Namespace) -> None:
    from vqdna.inspection import decode_row, inspect_path

    if args.decode is not None:
        print(decode_row(args.path, args.decode, tokenizer_dir=args.tokenizer, windows_path=args.windows))
        return
    if args.windows is not None:
        raise VqdnaError("inspect: --windows goes with --decode ROW")
    print(inspect_path(args.path, rows=args.rows, summary=not args.no_summary, tokenizer_dir=args.tokenizer))


# -- assembly --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Subcommand:
    name: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], None]
    help: str  # the line in `vqdna --help`, and the description of `vqdna NAME --help`


SUBCOMMANDS = (
    Subcommand("download", download_arguments, cmd_download, "Fetch a genome (mirror first), check its sha256, store it bgzipped and faidx-indexed."),
    Subcommand("fetch-file", fetch_file_arguments, cmd_fetch_file, "Fetch a small file kept as it is (an assembly report), mirror first, sha256 checked or recorded."),
    Subcommand("fetch-archive", fetch_archive_arguments, cmd_fetch_archive, "Fetch a zip archive (mirror first; Google Drive links too), check or record its sha256."),
    Subcommand("unpack-archive", unpack_archive_arguments, cmd_unpack_archive, "Unzip an archive once into a folder (UNPACKED.json written last)."),
    Subcommand("windows", windows_arguments, cmd_windows, "Cut a genome into fixed-length windows with train/dev/test regions, as Parquet."),
    Subcommand("train-tokenizer", train_tokenizer_arguments, cmd_train_tokenizer, "Train a tokenizer (VQ-VAE, HRQ, BPE; k-mer and char are written down) on windows."),
    Subcommand("evaluate-tokenizer", evaluate_tokenizer_arguments, cmd_evaluate_tokenizer, "Measure a saved tokenizer on held-out windows into metrics.json."),
    Subcommand("tokenize", tokenize_arguments, cmd_tokenize, "Encode a windows file with a trained tokenizer into a token file."),
    Subcommand("pretrain", pretrain_arguments, cmd_pretrain, "Masked-code pretraining of the encoder; saves the model with save_pretrained."),
    Subcommand("prepare-dataset", prepare_dataset_arguments, cmd_prepare_dataset, "Build a labelled dataset (GUE CSVs or genome classification) as Parquet splits."),
    Subcommand("tokenize-dataset", tokenize_dataset_arguments, cmd_tokenize_dataset, "Encode a prepared dataset's splits with a tokenizer, once for every fine-tuning and probe on them."),
    Subcommand("finetune", finetune_arguments, cmd_finetune, "Fine-tuning (LoRA, or full) of a pretrained encoder on one dataset and seed."),
    Subcommand("kmer-baseline", kmer_baseline_arguments, cmd_kmer_baseline, "Bag of 3-6-mers + logistic regression (ridge for regression) on one dataset."),
    Subcommand("probe", probe_arguments, cmd_probe, "Linear probe on frozen features (tokenizer embeddings or encoder states) of one dataset."),
    Subcommand(
        "analyse-codebook", analyse_codebook_arguments, cmd_analyse_codebook,
        "The codebook seen through a labelled dataset (the paper's Figure 4): per class its enriched codes and where they sit, and a 2-D map of code-usage profiles.",
    ),
    Subcommand("plot", plot_arguments, cmd_plot, "Draw one of the report's figures or tables from artifacts (what the plot rules run)."),
    Subcommand("tables", tables_arguments, cmd_tables, "The paper's Tables 1-7, ours beside the published numbers, our methods compared with paired bootstrap intervals, and a summary (CSV and Markdown)."),
    Subcommand("embed", embed_arguments, cmd_embed, "Mean-pooled encoder embeddings of your sequences (FASTA or CSV) as Parquet: id, length, embedding."),
    Subcommand("predict", predict_arguments, cmd_predict, "Predictions of a fine-tuned run for your sequences (FASTA or CSV) as CSV or Parquet."),
    Subcommand(
        "inspect",
        inspect_arguments,
        cmd_inspect,
        "Show a Parquet artifact: schema, row count, vqdna metadata and a few rows; for windows and tokens also "
        "windows per contig and split, for tokens each level's code usage and perplexity; --decode shows one token row "
        "decoded beside its window. Writes nothing.",
    ),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vqdna", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"vqdna {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="SUBCOMMAND")
    for command in SUBCOMMANDS:
        p = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(p)
        p.set_defaults(func=command.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    args.argv = argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        args.func(args)
    except VqdnaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, PermissionError) as err:
        print(f"error: {err.filename or ''}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0
