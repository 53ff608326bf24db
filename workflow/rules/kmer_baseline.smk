rule kmer_baseline:
    input:
        dataset=expand("results/datasets/{{dataset}}/{split}.parquet", split=SPLITS),
    output:
        metrics="results/kmer_baseline/{dataset}/seed{seed}/metrics.json",
        predictions="results/kmer_baseline/{dataset}/seed{seed}/predictions.parquet",
    log:
        "logs/kmer_baseline/{dataset}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/kmer_baseline/{dataset}/seed{seed}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=8000,
        runtime=60,
    params:
        spec=get_scoring_spec,
        settings=get_kmer_settings,
        dataset=dataset_folder,
        folder=output_folder,
        version=STAGE_VERSIONS["kmer_baseline"],
    shell:
        "python -m vqdna kmer-baseline --spec {params.spec:q} --settings {params.settings:q} --seed {wildcards.seed}"
        " --dataset {params.dataset:q} --output {params.folder:q} > {log:q} 2>&1"
