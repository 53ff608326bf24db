# A dataset's splits encoded once per tokenizer, read by every fine-tuning job and probe on them.
rule tokenize_dataset:
    input:
        unpack(get_dataset_tokens_inputs),
    output:
        expand(
            "results/dataset_tokens/{{tokenizer}}/{{dataset}}/{split}.parquet",
            split=SPLITS,
        ),
    log:
        "logs/tokenize_dataset/{tokenizer}/{dataset}.log",
    benchmark:
        "logs/benchmarks/tokenize_dataset/{tokenizer}/{dataset}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=2 * 60,
    params:
        max_length=get_dataset_max_length,
        tokenizer=tokenizer_folder,
        dataset=dataset_folder,
        folder=output_folder,
        version=STAGE_VERSIONS["tokenize_dataset"],
    shell:
        "python -m vqdna tokenize-dataset --tokenizer {params.tokenizer:q} --name {wildcards.tokenizer}"
        " --dataset {params.dataset:q} --max-length {params.max_length:q} --output {params.folder:q}"
        " --threads {threads} > {log:q} 2>&1"
