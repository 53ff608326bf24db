rule train_tokenizer:
    input:
        get_tokenizer_windows,
    output:
        model="results/tokenizers/{tokenizer}/model.safetensors",
        config="results/tokenizers/{tokenizer}/config.json",
        metrics="results/tokenizers/{tokenizer}/metrics.json",
        curves="results/tokenizers/{tokenizer}/curves.csv",
    log:
        "logs/train_tokenizer/{tokenizer}.log",
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
    shell:
        "python -m vqdna train-tokenizer --name {wildcards.tokenizer} --settings {params.settings:q}"
        " --windows {input} --output {params.folder} --threads {threads} > {log} 2>&1"


rule tokenize_genome:
    input:
        unpack(get_tokenizer_of_rule),
        windows="results/windows/{genome}.parquet",
    output:
        "results/tokens/{tokenizer}/{genome}.parquet",
    log:
        "logs/tokenize_genome/{tokenizer}/{genome}.log",
    conda:
        ENV
    threads: 4
    resources:
        gpu=1,
        mem_mb=8000,
        runtime=6 * 60,
    params:
        tokenizer=tokenizer_folder,
    shell:
        "python -m vqdna tokenize --tokenizer {params.tokenizer} --name {wildcards.tokenizer}"
        " --windows {input.windows} --output {output} --threads {threads} > {log} 2>&1"
