# The report's figures and tables, drawn from artifacts only: remade in seconds, nothing retrained.
# `snakemake --report report.html` gathers them (and the codebook analysis) into one page.
rule plot_tokenizer:
    input:
        metrics="results/tokenizers/{tokenizer}/metrics.json",
        training="results/tokenizers/{tokenizer}/training.json",  # curves.csv is written with it
    output:
        report(
            "results/plots/tokenizers/{tokenizer}.png",
            caption="../report/tokenizer.rst",
            category="1. Tokenizers",
            labels={"tokenizer": "{tokenizer}"},
        ),
    log:
        "logs/plot_tokenizer/{tokenizer}.log",
    benchmark:
        "logs/benchmarks/plot_tokenizer/{tokenizer}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        curves=get_tokenizer_curves_option,
        version=STAGE_VERSIONS["plots"],
    shell:
        "python -m vqdna plot tokenizer --metrics {input.metrics:q} {params.curves} --output {output:q} > {log:q} 2>&1"


rule plot_pretraining:
    input:
        metrics="results/pretrain/{run}/metrics.json",  # curves.csv is written with it
    output:
        report(
            "results/plots/pretraining/{run}.png",
            caption="../report/pretraining.rst",
            category="2. Pretraining",
            labels={"run": "{run}"},
        ),
    log:
        "logs/plot_pretraining/{run}.log",
    benchmark:
        "logs/benchmarks/plot_pretraining/{run}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        curves=lambda wildcards: f"results/pretrain/{wildcards.run}/curves.csv",
        version=STAGE_VERSIONS["plots"],
    shell:
        "python -m vqdna plot pretraining --metrics {input.metrics:q} --curves {params.curves:q} --output {output:q} > {log:q} 2>&1"


rule plot_finetuning:
    input:
        unpack(get_finetuning_plot_inputs),
    output:
        report(
            "results/plots/finetuning/{dataset}.png",
            caption="../report/finetuning.rst",
            category="3. Fine-tuning",
            labels={"dataset": "{dataset}"},
        ),
    log:
        "logs/plot_finetuning/{dataset}.log",
    benchmark:
        "logs/benchmarks/plot_finetuning/{dataset}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        version=STAGE_VERSIONS["plots"],
        draw_of=get_draw_of,
    shell:
        "python -m vqdna plot finetuning --dataset {wildcards.dataset:q} --finetuned {input.finetune:q}"
        " --floors {input.kmer:q} --probes {input.probe:q} --draw-of {params.draw_of:q} --output {output:q} > {log:q} 2>&1"


rule render_tables:
    input:
        expand("results/tables/table{n}.csv", n=range(1, 8)),
    output:
        report(
            "results/plots/tables.html",
            caption="../report/tables.rst",
            category="4. Tables 1-7",
            labels={"tables": "ours beside the published numbers"},
        ),
    log:
        "logs/render_tables/tables.log",
    benchmark:
        "logs/benchmarks/render_tables/tables.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        version=STAGE_VERSIONS["plots"],
    shell:
        "python -m vqdna plot tables --tables {input:q} --output {output:q} > {log:q} 2>&1"


# Reads every job's benchmark file; its inputs make it the last job, so the table holds all the others.
rule runtime_table:
    input:
        get_plots,
    output:
        report(
            "results/plots/runtime.html",
            caption="../report/runtime.rst",
            category="5. Runtime",
            labels={"runtime": "per rule"},
        ),
    log:
        "logs/runtime_table/runtime.log",
    benchmark:
        "logs/benchmarks/runtime_table/runtime.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        version=STAGE_VERSIONS["plots"],
    shell:
        "python -m vqdna plot runtime --benchmarks logs/benchmarks --output {output:q} > {log:q} 2>&1"
