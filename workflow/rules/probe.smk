rule linear_probe:
    input:
        unpack(get_probe_inputs),
    output:
        metrics="results/probe/{tokenizer}/{dataset}/metrics.json",
        predictions="results/probe/{tokenizer}/{dataset}/predictions.parquet",
    log:
        "logs/linear_probe/{tokenizer}/{dataset}.log",
    benchmark:
        "logs/benchmarks/linear_probe/{tokenizer}/{dataset}.tsv"
    wildcard_constraints:
        tokenizer=_alternatives(PLAN.tokenizers),
        dataset=_alternatives(PLAN.datasets),
    conda:
        ENV
    threads: 2
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=2 * 60,
    params:
        spec=get_scoring_spec,
        settings=get_probe_settings,
        tokenizer=tokenizer_folder,
        dataset=dataset_folder,
        folder=output_folder,
        version=STAGE_VERSIONS["linear_probe"],
    shell:
        "python -m vqdna probe --features tokenizer --spec {params.spec:q} --settings {params.settings:q}"
        " --tokenizer {params.tokenizer:q} --dataset {params.dataset:q} --output {params.folder:q}"
        " --threads {threads} > {log:q} 2>&1"
