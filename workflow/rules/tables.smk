rule make_tables:
    input:
        unpack(get_table_inputs),
    output:
        expand(
            "results/tables/{table}.{suffix}", table=TABLE_FILES, suffix=["csv", "md"]
        ),
    log:
        "logs/make_tables/tables.log",
    benchmark:
        "logs/benchmarks/make_tables/tables.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        plan=get_tables_plan,
        published_sha256=published_digest(),
        folder=lambda wildcards, output: folder_of(output[0]),
        version=STAGE_VERSIONS["make_tables"],
    shell:
        "python -m vqdna tables --plan {params.plan:q} --output-dir {params.folder:q}"
        " {input.finetune:q} {input.kmer:q} {input.probe:q} {input.tokenizers:q} {input.pretrain:q} > {log:q} 2>&1"
