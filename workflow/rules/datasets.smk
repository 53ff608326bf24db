rule prepare_dataset:
    input:
        get_dataset_windows,
    output:
        expand("results/datasets/{{dataset}}/{split}.parquet", split=SPLITS),
    log:
        "logs/prepare_dataset/{dataset}.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        spec=get_dataset_spec,
        windows=get_dataset_windows_args,
        folder=output_folder,
    shell:
        "python -m vqdna prepare-dataset --spec {params.spec:q} --windows {params.windows}"
        " --output {params.folder} > {log} 2>&1"
