rule make_windows:
    input:
        fasta="resources/genomes/{genome}.fa.gz",
        fai="resources/genomes/{genome}.fa.gz.fai",
        gzi="resources/genomes/{genome}.fa.gz.gzi",
    output:
        "results/windows/{genome}.parquet",
    log:
        "logs/make_windows/{genome}.log",
    benchmark:
        "logs/benchmarks/make_windows/{genome}.tsv"
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=2000,
        runtime=120,
    params:
        options=PLAN.window_flags,
        version=STAGE_VERSIONS["make_windows"],
    shell:
        "python -m vqdna windows --genome {wildcards.genome} --fasta {input.fasta:q}"
        " --output {output:q} {params.options} > {log:q} 2>&1"
