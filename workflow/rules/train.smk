# One training job per scaling point: ONE Slurm allocation of `nodes` nodes with
# gpus_per_node tasks each under profiles/slurm, nodes x gpus_per_node local processes
# (nodes emulated) under profiles/local. The launch prefix comes from benscale.study.


rule train:
    input:
        manifest=rules.extract.output.manifest,
        stats=rules.extract.output.stats,
        config=train_config_input,
    output:
        run=f"{RESULTS}/runs/{POINT}/run.json",
        epochs=report(
            f"{RESULTS}/runs/{POINT}/epochs.csv",
            category="3. Training",
            subcategory="{variant}: {mode} scaling",
            labels={"point": POINT, "file": "epochs.csv"},
        ),
        mllog=f"{RESULTS}/runs/{POINT}/mllog.txt",
    log:
        f"{RESULTS}/logs/train/{POINT}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{POINT}.tsv"
    params:
        launch=train_launch,
        data=lambda wildcards, input: Path(input.manifest).parent,
        out=lambda wildcards, output: Path(output.run).parent,
        config=train_config_arg,
        sets=train_sets,
    threads: train_threads
    resources:
        benscale_train=1,
        nodes=slurm_resource("nodes"),
        tasks_per_node=slurm_resource("tasks_per_node"),
        tasks=slurm_resource("tasks"),
        tasks_per_gpu=slurm_resource("tasks_per_gpu"),
        cpus_per_task=slurm_resource("cpus_per_task"),
        mem_mb=slurm_resource("mem_mb", unset=0),
        runtime=slurm_resource("runtime"),
        mpi=slurm_resource("mpi"),
        slurm_extra=slurm_resource("slurm_extra"),
        gres=slurm_resource("gres"),
    conda:
        ENV
    # Every Snakemake attempt starts afresh (an earlier attempt's checkpoints may stem from
    # other settings: docs/workflow.md, "A failed point"); a job that Slurm requeued after
    # a node failure (SLURM_RESTART_COUNT > 0) is the same attempt and resumes instead.
    shell:
        "if [ ${{SLURM_RESTART_COUNT:-0}} -eq 0 ]; then rm -rf {params.out}/checkpoints; fi;"
        " {params.launch} benscale train {params.config}"
        " --data {params.data} --out {params.out} {params.sets} > {log} 2>&1"
