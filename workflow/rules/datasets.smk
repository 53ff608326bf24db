rule prepare_dataset:
    input:
        get_dataset_inputs,
    output:
        expand("results/datasets/{{dataset}}/{split}.parquet", split=SPLITS),
    log:
        "logs/prepare_dataset/{dataset}.log",
    benchmark:
        "logs/benchmarks/prepare_dataset/{dataset}.tsv"
    # GUE CSVs may come from a URL: compute nodes often have no internet.
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=get_dataset_spec,
        genomes=get_dataset_genome_args,
        folder=output_folder,
        version=STAGE_VERSIONS["prepare_dataset"],
    shell:
        "python -m vqdna prepare-dataset --spec {params.spec:q} {params.genomes}"
        " --output {params.folder:q} > {log:q} 2>&1"
