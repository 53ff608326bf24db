rule pretrain_mlm:
    input:
        unpack(get_pretrain_inputs),
    output:
        model="results/pretrain/{run}/model.safetensors",
        config="results/pretrain/{run}/config.json",
        metrics="results/pretrain/{run}/metrics.json",
    log:
        "logs/pretrain_mlm/{run}.log",
    benchmark:
        "logs/benchmarks/pretrain_mlm/{run}.tsv"
    wildcard_constraints:
        run=_alternatives(PLAN.pretrained_runs),
    conda:
        ENV
    threads: 8
    resources:
        gpu=get_run_single_node_gpus,
        gpus_per_node=get_run_gpus,
        nodes=get_run_nodes,
        mpi=get_run_mpi,
        tasks=get_run_tasks,
        slurm_extra=get_run_slurm_extra,
        mem_mb=32000,
        runtime=3 * 24 * 60,
    params:
        settings=get_run_settings,
        tokenizer=tokenizer_folder,
        folder=output_folder,
        # Resumable checkpoints: outside the declared outputs, which Snakemake deletes
        # before a rerun; cleared by the run itself once its model is saved.
        state="results/pretrain_state/{run}",
        version=STAGE_VERSIONS["pretrain_mlm"],
    shell:
        "python -m vqdna pretrain --name {wildcards.run} --settings {params.settings:q}"
        " --tokenizer {params.tokenizer:q} --tokens {input.tokens:q} --output {params.folder:q}"
        " --state {params.state:q} --processes {resources.gpus_per_node} --nodes {resources.nodes}"
        " --threads {threads} > {log:q} 2>&1"
