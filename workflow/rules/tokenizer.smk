rule train_tokenizer:
    input:
        get_tokenizer_windows,
    output:
        # The folder also holds the model (model.safetensors, or BPE's tokenizer.json)
        # and, for learned tokenizers, curves.csv/png; it is written as a whole.
        config="results/tokenizers/{tokenizer}/config.json",
        training="results/tokenizers/{tokenizer}/training.json",
    log:
        "logs/train_tokenizer/{tokenizer}.log",
    benchmark:
        "logs/benchmarks/train_tokenizer/{tokenizer}.tsv"
    wildcard_constraints:
        tokenizer=_alternatives(PLAN.trained_tokenizers),
    conda:
        ENV
    threads: 8
    resources:
        gpu=1,
        mem_mb=16000,
        runtime=24 * 60,
    params:
        settings=get_tokenizer_settings,
        folder=output_folder,
        version=get_train_tokenizer_version,
    shell:
        "python -m vqdna train-tokenizer --name {wildcards.tokenizer} --settings {params.settings:q}"
        " --windows {input:q} --output {params.folder:q} --threads {threads} > {log:q} 2>&1"


rule evaluate_tokenizer:
    input:
        unpack(get_tokenizer_of_rule),
        windows=get_tokenizer_windows,
    output:
        "results/tokenizers/{tokenizer}/metrics.json",
    log:
        "logs/evaluate_tokenizer/{tokenizer}.log",
    benchmark:
        "logs/benchmarks/evaluate_tokenizer/{tokenizer}.tsv"
    wildcard_constraints:
        tokenizer=_alternatives(PLAN.trained_tokenizers),
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=60,
    params:
        settings=get_tokenizer_evaluation,
        tokenizer=tokenizer_folder,
        version=STAGE_VERSIONS["evaluate_tokenizer"],
    shell:
        "python -m vqdna evaluate-tokenizer --tokenizer {params.tokenizer:q} --settings {params.settings:q}"
        " --windows {input.windows:q} --output {output:q} --threads {threads} > {log:q} 2>&1"


rule tokenize_genome:
    input:
        unpack(get_tokenizer_of_rule),
        windows="results/windows/{genome}.parquet",
    output:
        "results/tokens/{tokenizer}/{genome}.parquet",
    log:
        "logs/tokenize_genome/{tokenizer}/{genome}.log",
    benchmark:
        "logs/benchmarks/tokenize_genome/{tokenizer}/{genome}.tsv"
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=6 * 60,
    params:
        tokenizer=tokenizer_folder,
        version=STAGE_VERSIONS["tokenize_genome"],
    shell:
        "python -m vqdna tokenize --tokenizer {params.tokenizer:q} --name {wildcards.tokenizer}"
        " --windows {input.windows:q} --output {output:q} --threads {threads} > {log:q} 2>&1"
