rule download_archive:
    output:
        # Removed once unpacked: the sidecar keeps its sha256 and where it came from.
        archive=temp("resources/archives/{archive}.zip"),
        source="resources/archives/{archive}.zip.source.json",
    log:
        "logs/download_archive/{archive}.log",
    benchmark:
        "logs/benchmarks/download_archive/{archive}.tsv"
    wildcard_constraints:
        archive=_alternatives(PLAN.archives),
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,
    params:
        source=get_archive_source,
        sha256=get_archive_sha256,
        version=STAGE_VERSIONS["download_archive"],
    shell:
        "python -m vqdna fetch-archive --source {params.source:q} --sha256={params.sha256:q}"
        " --output {output.archive:q} > {log:q} 2>&1"


rule unpack_archive:
    input:
        "resources/archives/{archive}.zip",
    output:
        directory("resources/archives/{archive}"),
    log:
        "logs/unpack_archive/{archive}.log",
    benchmark:
        "logs/benchmarks/unpack_archive/{archive}.tsv"
    wildcard_constraints:
        archive=_alternatives(PLAN.archives),
    # Unpacked on the submitting host too: one short job, where the archive already is.
    localrule: True
    conda:
        ENV
    threads: 1
    resources:
        mem_mb=1000,
        runtime=60,
    params:
        version=STAGE_VERSIONS["unpack_archive"],
    shell:
        "python -m vqdna unpack-archive --archive {input:q} --output {output:q} > {log:q} 2>&1"
