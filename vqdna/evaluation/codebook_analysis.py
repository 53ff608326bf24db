"""The codebook seen through a labelled dataset: the paper's Figure 4 (SARS-CoV-2 variants), as a stage.

Inputs: a learned tokenizer (VQ-VAE or HRQ) and a classification dataset it has
tokenized (:mod:`vqdna.dataset_tokens`). Nothing is trained; per level:

- **profiles**: each sequence's code-usage profile, the count of every code in
  it (``profiles.parquet``: the codes present and their counts, sparse);
- **embedding**: a 2-D map of the profiles coloured by class (PCA by default,
  t-SNE or UMAP as options) on a seeded sample, with the silhouette of the
  classes on the map as one number for "the classes separate"
  (``embedding.parquet``, ``embedding.png``);
- **codebook map**: the paper's own Figure 4 view, the code vectors themselves on a
  2-D map, each coloured by the class it is most enriched in (the paper labels
  codes by a linear classifier's Grad-CAM relevance instead, and uses UMAP;
  ``codebook_map.parquet``, ``codebook_map.png``);
- **enriched codes**: for each class and code, whether the code is more frequent
  in the class's sequences than in the others' (one-sided Mann-Whitney U on
  per-sequence frequencies, Benjamini-Hochberg corrected over every class and
  code of the level; ``enriched_codes.parquet``, ``enrichment.png``);
- **where they sit**: every occurrence of each class's top enriched codes in that
  class's sequences, as an offset in the sequence (in nt: a code's index times the
  tokenizer's stride, the first of the nucleotides it stands for), and as a genome position where the dataset was cut from
  genomes and carries ``contig`` and ``start`` (``code_offsets.parquet``, ``offsets.png``);
- **what they stand for**: with one code per nucleotide, a code is a learned name
  for a short local context: each occurrence carries the ``context`` nt centred
  on it, and each top code its most common context and that context's share of
  its occurrences (``context``, ``context_share`` in ``enriched_codes.parquet``,
  beside the code on the enrichment plot).

``summary.json`` gathers the classes, each level's silhouette and each class's top codes.
"""

from __future__ import annotations

import importlib.util
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp
from scipy import stats

from vqdna import VqdnaError
from vqdna.artifacts import COMPRESSION, SPLITS, atomic_dir, read_metadata, with_metadata
from vqdna.dataset_tokens import read_split_tokens
from vqdna.genome import normalise_sequence
from vqdna.tokenizer.api import VQTokenizer, load_tokenizer

log = logging.getLogger(__name__)

EMBEDDINGS = ("pca", "tsne", "umap")


@dataclass
class AnalysisSettings:
    """The `analysis: settings:` block of the config."""

    embedding: str = "pca"  # pca (fast, deterministic) | tsne | umap (pip install umap-learn; slow to start on 2 cores)
    max_embedded: int = 5000  # sequences in the 2-D map, a seeded sample: t-SNE and UMAP grow faster than linearly
    top_codes: int = 10  # per class and level: the codes reported, plotted and located
    fdr: float = 0.05  # Benjamini-Hochberg false discovery rate a top code must pass
    splits: tuple[str, ...] = SPLITS  # the labelled sequences analysed; nothing here is trained, so all of them by default
    seed: int = 0
    context: int = 5  # nt centred on each located code (odd): what a code stands for, in bases

    @classmethod
    def from_config(cls, values: dict | None, where: str) -> AnalysisSettings:
        values = dict(values or {})
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise VqdnaError(f"{where}: unknown setting(s) {', '.join(unknown)} (known: {', '.join(f.name for f in fields(cls))})")
        if "splits" in values:
            values["splits"] = tuple(values["splits"])
        settings = cls(**values)
        if settings.embedding not in EMBEDDINGS:
            raise VqdnaError(f"{where}: embedding must be one of {', '.join(EMBEDDINGS)}, got {settings.embedding!r}")
        if settings.embedding == "umap" and importlib.util.find_spec("umap") is None:
            raise VqdnaError(f"{where}: embedding umap needs umap-learn: pip install umap-learn (or choose pca or tsne)")
        if not settings.splits or set(settings.splits) - set(SPLITS):
            raise VqdnaError(f"{where}: splits must be a non-empty subset of {', '.join(SPLITS)}, got {list(settings.splits)}")
        if settings.max_embedded < 3 or settings.top_codes < 1 or not 0 < settings.fdr <= 1:
            raise VqdnaError(f"{where}: max_embedded must be >= 3, top_codes >= 1 and fdr in (0, 1]")
        if settings.context < 1 or settings.context % 2 == 0:
            raise VqdnaError(f"{where}: context must be an odd number of nt (1, 3, 5, ...), got {settings.context}")
        return settings


# -- the statistics ------------------------------------------------------------------------------------


def code_counts(codes: list[np.ndarray], size: int) -> sp.csr_matrix:
    """(sequences, K) counts of each code in each sequence, from per sequence 1-D code arrays."""
    lengths = np.array([len(c) for c in codes])
    rows = np.repeat(np.arange(len(codes)), lengths)
    columns = np.concatenate(codes).astype(np.int64) if len(codes) else np.zeros(0, np.int64)
    return sp.coo_matrix((np.ones(len(rows), np.int32), (rows, columns)), shape=(len(codes), size)).tocsr()  # repeats summed


def enrichment(counts: sp.csr_matrix, labels: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Per (class, code): is the code more frequent in the class's sequences than in the others'?

    The unit is the sequence: each sequence's frequency of the code (its count
    over the sequence's length), the class's sequences against every other
    class's, by a one-sided Mann-Whitney U test (no assumption on the shape of
    the frequencies, most of them zero). Counts of single positions would not
    be independent samples: neighbouring codes share their receptive fields.
    q: Benjamini-Hochberg over every class and code of the level.
    log2_enrichment: the class's mean frequency over the others', each with a
    pseudocount of one occurrence in the whole class.
    Arrays of shape (classes, K).
    """
    lengths = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1)
    frequency = counts.multiply(1.0 / lengths[:, None]).toarray().astype(np.float32)  # (sequences, K)
    size = counts.shape[1]
    p = np.ones((num_classes, size))
    mean_in, mean_other, holders = (np.zeros((num_classes, size)) for _ in range(3))
    for c in range(num_classes):
        mine = labels == c
        if not mine.any() or mine.all():
            continue
        inside, outside = frequency[mine], frequency[~mine]
        varied = np.flatnonzero((inside.max(axis=0) > 0) | (outside.max(axis=0) > 0))  # a code seen nowhere is not tested
        if len(varied):
            p[c, varied] = stats.mannwhitneyu(inside[:, varied], outside[:, varied], alternative="greater", axis=0, method="asymptotic").pvalue
        mean_in[c], mean_other[c] = inside.mean(axis=0), outside.mean(axis=0)
        holders[c] = (inside > 0).mean(axis=0)
    p = np.nan_to_num(p, nan=1.0)
    q = stats.false_discovery_control(p.ravel(), method="bh").reshape(p.shape)
    class_sizes = np.bincount(labels, minlength=num_classes)[:, None]
    pseudo = 1.0 / (np.mean(lengths) * np.maximum(class_sizes, 1))
    return {
        "mean_frequency_in_class": mean_in, "mean_frequency_other_classes": mean_other, "fraction_holding_in_class": holders,
        "log2_enrichment": np.log2((mean_in + pseudo) / (mean_other + pseudo)), "p_value": p, "q_value": q,
    }


def top_codes(table: dict[str, np.ndarray], count: int, fdr: float) -> list[np.ndarray]:
    """Per class its most enriched codes: q below ``fdr`` and more frequent than elsewhere, by p then log2 enrichment."""
    out = []
    for c in range(table["p_value"].shape[0]):
        enriched = np.flatnonzero((table["q_value"][c] < fdr) & (table["log2_enrichment"][c] > 0))
        order = np.lexsort((-table["log2_enrichment"][c][enriched], table["p_value"][c][enriched]))
        out.append(enriched[order][:count])
    return out


def code_offsets(codes: list[np.ndarray], labels: np.ndarray, top: list[np.ndarray], stride: int = 1) -> dict[str, np.ndarray]:
    """Every occurrence of each class's top codes in that class's own sequences: row, class, code, offset (nt)."""
    rows, classes, found, offsets = [], [], [], []
    for c, wanted in enumerate(top):
        if not len(wanted):
            continue
        for row in np.flatnonzero(labels == c):
            here = np.flatnonzero(np.isin(codes[row], wanted))
            rows.append(np.full(len(here), row))
            classes.append(np.full(len(here), c))
            found.append(codes[row][here])
            offsets.append(here * stride)
    join = lambda parts: np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)  # noqa: E731
    return {"row": join(rows), "class": join(classes), "code": join(found), "offset": join(offsets)}


def embed_profiles(counts: sp.csr_matrix, method: str, seed: int) -> np.ndarray:
    """(n, 2) map of code-usage profiles.

    Profiles are frequencies (a sequence's counts over its length) under a square
    root, the Hellinger transform of compositional data: without it PCA is
    dominated by the few most common codes.
    """
    lengths = np.maximum(np.asarray(counts.sum(axis=1)).ravel(), 1)
    return embed_points(np.sqrt(counts.toarray() / lengths[:, None]), method, seed)


def class_of_codes(table: dict[str, np.ndarray], fdr: float) -> np.ndarray:
    """(K,) per code the class it is most enriched in (q below ``fdr``, log2 enrichment above 0), -1 for none."""
    score = np.where((table["q_value"] < fdr) & (table["log2_enrichment"] > 0), table["log2_enrichment"], -np.inf)
    return np.where(np.isfinite(score.max(axis=0)), score.argmax(axis=0), -1)


def embed_points(points: np.ndarray, method: str, seed: int) -> np.ndarray:
    """(n, 2) map of (n, d) points by PCA, t-SNE or UMAP."""
    if method == "pca":
        from sklearn.decomposition import PCA

        return PCA(n_components=2, random_state=seed).fit_transform(points)
    if method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = min(30.0, (len(points) - 1) / 3)
        return TSNE(n_components=2, init="pca", perplexity=perplexity, random_state=seed).fit_transform(points)
    import umap  # AnalysisSettings checked that it is installed

    return umap.UMAP(n_components=2, random_state=seed).fit_transform(points)


def silhouette(points: np.ndarray, labels: np.ndarray, seed: int) -> float | None:
    """The classes' silhouette on the map (-1 to 1; 0: no separation); None with one class."""
    if len(np.unique(labels)) < 2:
        return None
    from sklearn.metrics import silhouette_score

    return float(silhouette_score(points, labels, sample_size=min(len(points), 5000), random_state=seed))


def code_contexts(sequences: np.ndarray, rows: np.ndarray, offsets: np.ndarray, width: int) -> np.ndarray:
    """The ``width`` nt centred on each (row, offset), as the tokenizer reads them (the sequence policy applied);
    "" where the window runs off the sequence."""
    half = width // 2
    return np.array([normalise_sequence(sequences[row][offset - half : offset + half + 1]) if half <= offset < len(sequences[row]) - half else ""
                     for row, offset in zip(rows, offsets)], dtype=object)


def dominant_context(contexts: np.ndarray) -> tuple[str | None, float]:
    """The most common of one code's contexts and the share of them it has; (None, nan) when none lies inside its sequence."""
    seen = contexts[contexts != ""].astype(str)
    if not len(seen):
        return None, float("nan")
    values, counts = np.unique(seen, return_counts=True)
    return str(values[counts.argmax()]), float(counts.max() / counts.sum())


# -- the stage -----------------------------------------------------------------------------------------


def class_names(dataset_path: Path, num_classes: int) -> list[str]:
    """Genome classification and species datasets name their classes by genome; others by label."""
    genomes = read_metadata(dataset_path).get("vqdna.genomes")
    names = json.loads(genomes) if genomes else []
    return names if len(names) == num_classes else [f"class {c}" for c in range(num_classes)]


def _read_inputs(tokenizer: VQTokenizer, tokens_dir: Path, dataset_dir: Path, splits: tuple[str, ...]) -> dict:
    """Labels, per row codes, their split and row, and (contig, start) where the dataset has them."""
    labels, codes, sequences, split_of, index, contigs, starts = [], [], [], [], [], [], []
    for split in splits:
        split_labels, split_codes = read_split_tokens(tokens_dir / f"{split}.parquet", tokenizer.hash)
        labels.append(split_labels)
        codes += split_codes
        split_of += [split] * len(split_codes)
        index.append(np.arange(len(split_codes)))
        path = dataset_dir / f"{split}.parquet"
        has_location = {"contig", "start"} <= set(pq.read_schema(path).names)
        rows = pq.read_table(path, columns=["sequence", "contig", "start"] if has_location else ["sequence"])
        sequences += rows.column("sequence").to_pylist()
        if has_location:
            contigs += rows.column("contig").to_pylist()
            starts.append(rows.column("start").to_numpy())
    labels = np.concatenate(labels)
    if not np.issubdtype(labels.dtype, np.integer):
        raise VqdnaError(f"{tokens_dir}: labels are not classes; the codebook analysis needs a classification dataset")
    located = len(contigs) == len(codes)
    return {
        "labels": labels, "codes": codes, "sequences": np.array(sequences, dtype=object), "split": np.array(split_of), "index": np.concatenate(index),
        "contig": np.array(contigs, dtype=object) if located else None, "start": np.concatenate(starts) if located else None,
    }


def analyse_codebook(
    tokenizer_dir: str | Path, tokens_dir: str | Path, dataset_dir: str | Path, output_dir: str | Path, settings: dict | None = None
) -> dict:
    """Write the tables, plots and summary of the module docstring to ``output_dir`` (whole or not at all); return the summary."""
    config = AnalysisSettings.from_config(settings, "analysis.settings")
    tokenizer = load_tokenizer(tokenizer_dir, device="cpu")
    if not isinstance(tokenizer, VQTokenizer):
        raise VqdnaError(f"{tokenizer_dir}: a {tokenizer.config.type} tokenizer has no codebook; the analysis reads VQ-VAE or HRQ codes")
    tokens_dir, dataset_dir = Path(tokens_dir), Path(dataset_dir)
    data = _read_inputs(tokenizer, tokens_dir, dataset_dir, config.splits)
    labels, num_classes = data["labels"], int(data["labels"].max()) + 1
    names = class_names(dataset_dir / f"{config.splits[0]}.parquet", num_classes)
    rng = np.random.default_rng(config.seed)
    sample = np.sort(rng.choice(len(labels), min(len(labels), config.max_embedded), replace=False))
    meta = {"tokenizer_hash": tokenizer.hash, "classes": names, "settings": {**asdict(config), "splits": list(config.splits)}}
    summary: dict = {**meta, "sequences": len(labels), "class_sequences": np.bincount(labels, minlength=num_classes).tolist(),
                     "located": data["contig"] is not None, "levels": []}
    profile_columns: dict[str, pa.Array] = {"split": pa.array(data["split"]), "index": pa.array(data["index"]), "label": pa.array(labels)}
    embedded, mapped, enriched, located = [], [], [], []
    for level, size in enumerate(tokenizer.level_sizes, start=1):
        per_row = [c[level - 1] for c in data["codes"]]
        counts = code_counts(per_row, size)
        profile_columns[f"codes_l{level}"] = pa.ListArray.from_arrays(pa.array(counts.indptr.astype(np.int32)), pa.array(counts.indices.astype(np.int32)))
        profile_columns[f"counts_l{level}"] = pa.ListArray.from_arrays(pa.array(counts.indptr.astype(np.int32)), pa.array(counts.data.astype(np.int32)))
        log.info("level %d: embedding %d profiles (%s)", level, len(sample), config.embedding)
        points = embed_profiles(counts[sample], config.embedding, config.seed)
        embedded.append({"level": np.full(len(sample), level), "split": data["split"][sample], "index": data["index"][sample],
                         "label": labels[sample], "x": points[:, 0], "y": points[:, 1]})
        table = enrichment(counts, labels, num_classes)
        top = top_codes(table, config.top_codes, config.fdr)
        rank = np.zeros((num_classes, size), np.int64)
        for c, codes in enumerate(top):
            rank[c, codes] = np.arange(1, len(codes) + 1)
        grid_class, grid_code = np.indices((num_classes, size))
        enriched.append({"level": np.full(grid_code.size, level), "label": grid_class.ravel(), "code": grid_code.ravel(),
                         **{k: np.asarray(v).ravel() for k, v in table.items()}, "rank": rank.ravel()})
        # The paper's view (its Figure 4): the code vectors themselves on a map, each coloured by the class it marks.
        vectors = tokenizer.codebook_tables()[level - 1].numpy()
        code_points = embed_points(vectors, config.embedding, config.seed)
        mapped.append({"level": np.full(size, level), "code": np.arange(size), "x": code_points[:, 0], "y": code_points[:, 1],
                       "label": class_of_codes(table, config.fdr), "occurrences": np.asarray(counts.sum(axis=0)).ravel()})
        offsets = code_offsets(per_row, labels, top, tokenizer.stride)
        where = {"level": np.full(len(offsets["row"]), level), "label": offsets["class"], "code": offsets["code"],
                 "split": data["split"][offsets["row"]], "index": data["index"][offsets["row"]], "offset": offsets["offset"]}
        if data["contig"] is not None:
            where["contig"] = data["contig"][offsets["row"]]
            where["genome_position"] = data["start"][offsets["row"]] + offsets["offset"]
        # centred on the code's own nucleotides (stride of them from its offset)
        where["context"] = code_contexts(data["sequences"], offsets["row"], offsets["offset"] + tokenizer.stride // 2, config.context)
        located.append(where)
        context = np.full((num_classes, size), None, dtype=object)  # read for the located (top) codes only
        context_share = np.full((num_classes, size), np.nan)
        for c, codes in enumerate(top):
            for code in codes:
                mine = (offsets["class"] == c) & (offsets["code"] == code)
                context[c, code], context_share[c, code] = dominant_context(where["context"][mine])
        enriched[-1]["context"], enriched[-1]["context_share"] = context.ravel(), context_share.ravel()
        summary["levels"].append({
            "level": level, "codebook_size": size, "silhouette_2d": silhouette(points, labels[sample], config.seed),
            "codes_used": int((np.asarray(counts.sum(axis=0)).ravel() > 0).sum()),
            "significant_codes": int((table["q_value"] < config.fdr).sum()),
            "top_codes": {names[c]: [{"code": int(code), "log2_enrichment": round(float(table["log2_enrichment"][c, code]), 3),
                                       "fraction_holding_in_class": round(float(table["fraction_holding_in_class"][c, code]), 4),
                                       "q_value": float(table["q_value"][c, code]), "context": context[c, code],
                                       "context_share": None if np.isnan(context_share[c, code]) else round(float(context_share[c, code]), 3)} for code in codes] for c, codes in enumerate(top)},
        })
    with atomic_dir(output_dir) as tmp:
        _write(tmp / "profiles.parquet", profile_columns, meta)
        _write(tmp / "embedding.parquet", _joined(embedded), meta)
        _write(tmp / "enriched_codes.parquet", _joined(enriched), meta)
        _write(tmp / "code_offsets.parquet", _joined(located), meta)
        _write(tmp / "codebook_map.parquet", _joined(mapped), meta)
        plot_embedding(_joined(embedded), names, tmp / "embedding.png")
        plot_codebook_map(_joined(mapped), names, tmp / "codebook_map.png")
        plot_enrichment(_joined(enriched), names, tmp / "enrichment.png")
        plot_offsets(_joined(located), names, tmp / "offsets.png")
        (tmp / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _joined(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {key: np.concatenate([part[key] for part in parts]) for key in parts[0]}


def _write(path: Path, columns: dict, meta: dict) -> None:
    as_arrow = lambda v: v if isinstance(v, pa.Array) else pa.array(v, type=pa.string() if v.dtype == object else None)  # noqa: E731
    table = pa.table({k: as_arrow(v) for k, v in columns.items()})
    pq.write_table(table.replace_schema_metadata(with_metadata(table.schema, **meta).metadata), path, compression=COMPRESSION)


# -- plots -----------------------------------------------------------------------------------------------


def _figure(panels: int, width: float = 4.5, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, panels, figsize=(width * panels, height), squeeze=False)
    return plt, fig, axes[0]


def plot_embedding(points: dict[str, np.ndarray], names: list[str], path: Path) -> None:
    """One panel per level: the sampled sequences' profiles on the 2-D map, coloured by class."""
    levels = np.unique(points["level"])
    plt, fig, axes = _figure(len(levels))
    for ax, level in zip(axes, levels):
        here = points["level"] == level
        for c, name in enumerate(names):
            mine = here & (points["label"] == c)
            ax.scatter(points["x"][mine], points["y"][mine], s=4, alpha=0.6, label=name)
        ax.set_title(f"code-usage profiles, level {level}")
        ax.set_xticks([]), ax.set_yticks([])
    axes[0].legend(markerscale=3, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_codebook_map(points: dict[str, np.ndarray], names: list[str], path: Path) -> None:
    """One panel per level: every code vector on the map, coloured by the class it is most enriched in (grey: none)."""
    levels = np.unique(points["level"])
    plt, fig, axes = _figure(len(levels))
    for ax, level in zip(axes, levels):
        here = points["level"] == level
        none = here & (points["label"] < 0)
        ax.scatter(points["x"][none], points["y"][none], s=6, c="lightgrey", label="no class")
        for c, name in enumerate(names):
            mine = here & (points["label"] == c)
            ax.scatter(points["x"][mine], points["y"][mine], s=10, label=name)
        ax.set_title(f"codebook, level {level}: codes by the class they mark")
        ax.set_xticks([]), ax.set_yticks([])
    axes[0].legend(markerscale=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_enrichment(table: dict[str, np.ndarray], names: list[str], path: Path) -> None:
    """One panel per class: its top codes (level:code) by log2 enrichment against the other classes."""
    plt, fig, axes = _figure(len(names), width=3.5)
    for c, (ax, name) in enumerate(zip(axes, names)):
        mine = np.flatnonzero((table["label"] == c) & (table["rank"] > 0))
        mine = mine[np.lexsort((table["rank"][mine], table["level"][mine]))]
        ax.barh(np.arange(len(mine)), table["log2_enrichment"][mine], color="tab:blue")
        ax.set_yticks(np.arange(len(mine)), [f"L{table['level'][i]}:{table['code'][i]} {table['context'][i] or ''}" for i in mine],
                      fontsize=7, family="monospace")
        ax.set_ylim(max(len(mine), 10) - 0.5, -0.5)  # the best on top, bars of one height in every panel
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("log2 enrichment over the other classes")
        if not len(mine):
            ax.text(0.5, 0.5, "no code passes the FDR", ha="center", va="center", transform=ax.transAxes)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_offsets(where: dict[str, np.ndarray], names: list[str], path: Path) -> None:
    """One panel per class: where in its sequences its top codes sit (offset in nt), one histogram per level."""
    plt, fig, axes = _figure(len(names), width=3.5, height=3.0)
    for c, (ax, name) in enumerate(zip(axes, names)):
        for level in np.unique(where["level"]):
            mine = (where["label"] == c) & (where["level"] == level)
            if mine.any():
                ax.hist(where["offset"][mine], bins=50, histtype="step", label=f"level {level}")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("offset in the sequence (nt)")
        if not (where["label"] == c).any():
            ax.text(0.5, 0.5, "no top code", ha="center", va="center", transform=ax.transAxes)
    axes[0].set_ylabel("occurrences of the class's top codes")
    if len(np.unique(where["level"])) > 1:
        axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
