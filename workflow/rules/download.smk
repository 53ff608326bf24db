rule download_genome:
    input:
        get_local_genome_source,
    output:
        fasta="resources/genomes/{genome}.fa.gz",
        fai="resources/genomes/{genome}.fa.gz.fai",
        gzi="resources/genomes/{genome}.fa.gz.gzi",
        source="resources/genomes/{genome}.source.json",
    log:
        "logs/download_genome/{genome}.log",
    benchmark:
        "logs/benchmarks/download_genome/{genome}.tsv"
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    params:
        source=get_genome_source,
        sha256=get_genome_sha256,
        version=STAGE_VERSIONS["download_genome"],
    shell:
        "python -m vqdna download --genome {wildcards.genome} --source {params.source:q}"
        " --sha256={params.sha256:q} --output {output.fasta:q} > {log:q} 2>&1"


rule download_assembly_report:
    output:
        report="resources/genomes/{genome}.assembly_report.txt",
        source="resources/genomes/{genome}.assembly_report.txt.source.json",
    log:
        "logs/download_assembly_report/{genome}.log",
    benchmark:
        "logs/benchmarks/download_assembly_report/{genome}.tsv"
    wildcard_constraints:
        genome=_alternatives(PLAN.genomes_with_reports),
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,
    params:
        source=get_assembly_report_source,
        sha256=get_assembly_report_sha256,
        version=STAGE_VERSIONS["download_genome"],
    shell:
        "python -m vqdna fetch-file --what 'assembly report of {wildcards.genome}'"
        " --source {params.source:q} --sha256={params.sha256:q} --output {output.report:q} > {log:q} 2>&1"
