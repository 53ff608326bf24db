rule finetune:
    input:
        unpack(get_finetune_inputs),
    output:
        metrics="results/finetune/{run}/{dataset}/seed{seed}/metrics.json",
        predictions="results/finetune/{run}/{dataset}/seed{seed}/predictions.parquet",
    log:
        "logs/finetune/{run}/{dataset}/seed{seed}.log",
    benchmark:
        "logs/benchmarks/finetune/{run}/{dataset}/seed{seed}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=12 * 60,
    params:
        spec=get_finetune_spec,
        settings=get_finetune_settings,
        tokenizer=tokenizer_folder,
        pretrained=pretrained_folder,
        dataset=dataset_folder,
        folder=output_folder,
        version=get_finetune_version,
    shell:
        "python -m vqdna finetune --spec {params.spec:q} --settings {params.settings:q} --seed {wildcards.seed}"
        " --pretrained {params.pretrained:q} --tokenizer {params.tokenizer:q}"
        " --dataset {params.dataset:q} --output {params.folder:q}"
        " --threads {threads} > {log:q} 2>&1"
