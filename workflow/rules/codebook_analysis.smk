# The codebook seen through a labelled dataset (the paper's Figure 4): enriched codes, where they sit, a 2-D map.
rule analyse_codebook:
    input:
        unpack(get_analysis_inputs),
    output:
        summary="results/codebook_analysis/{tokenizer}/{dataset}/summary.json",
        profiles="results/codebook_analysis/{tokenizer}/{dataset}/profiles.parquet",
        embedding="results/codebook_analysis/{tokenizer}/{dataset}/embedding.parquet",
        enriched="results/codebook_analysis/{tokenizer}/{dataset}/enriched_codes.parquet",
        offsets="results/codebook_analysis/{tokenizer}/{dataset}/code_offsets.parquet",
        codebook="results/codebook_analysis/{tokenizer}/{dataset}/codebook_map.parquet",
        embedding_plot=report(
            "results/codebook_analysis/{tokenizer}/{dataset}/embedding.png",
            caption="../report/codebook_analysis.rst",
            category="6. Codebook analysis",
            labels={
                "tokenizer": "{tokenizer}",
                "dataset": "{dataset}",
                "figure": "profiles by class",
            },
        ),
        codebook_plot=report(
            "results/codebook_analysis/{tokenizer}/{dataset}/codebook_map.png",
            caption="../report/codebook_analysis.rst",
            category="6. Codebook analysis",
            labels={
                "tokenizer": "{tokenizer}",
                "dataset": "{dataset}",
                "figure": "codebook by class",
            },
        ),
        enrichment_plot=report(
            "results/codebook_analysis/{tokenizer}/{dataset}/enrichment.png",
            caption="../report/codebook_analysis.rst",
            category="6. Codebook analysis",
            labels={
                "tokenizer": "{tokenizer}",
                "dataset": "{dataset}",
                "figure": "enriched codes",
            },
        ),
        offsets_plot=report(
            "results/codebook_analysis/{tokenizer}/{dataset}/offsets.png",
            caption="../report/codebook_analysis.rst",
            category="6. Codebook analysis",
            labels={
                "tokenizer": "{tokenizer}",
                "dataset": "{dataset}",
                "figure": "where they sit",
            },
        ),
    log:
        "logs/analyse_codebook/{tokenizer}/{dataset}.log",
    benchmark:
        "logs/benchmarks/analyse_codebook/{tokenizer}/{dataset}.tsv"
    wildcard_constraints:
        tokenizer=_alternatives(PLAN.tokenizers),
        dataset=_alternatives(PLAN.datasets),
    conda:
        ENV
    threads: 2
    resources:
        mem_mb=16000,
        runtime=60,
    params:
        settings=get_analysis_settings,
        tokenizer=tokenizer_folder,
        tokens=tokens_folder,
        dataset=dataset_folder,
        folder=output_folder,
        version=STAGE_VERSIONS["analyse_codebook"],
    shell:
        "python -m vqdna analyse-codebook --settings {params.settings:q} --tokenizer {params.tokenizer:q}"
        " --tokens {params.tokens:q} --dataset {params.dataset:q} --output {params.folder:q}"
        " --threads {threads} > {log:q} 2>&1"
