rule make_tables:
    input:
        get_finetune_metrics,
    output:
        csv="results/tables/summary.csv",
        markdown="results/tables/summary.md",
    log:
        "logs/make_tables/summary.log",
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    params:
        version=STAGE_VERSIONS["make_tables"],
    shell:
        "python -m vqdna tables --csv {output.csv} --markdown {output.markdown} {input} > {log} 2>&1"
