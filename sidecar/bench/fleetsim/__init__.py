"""The deterministic fleet simulation (`goose-sidecar bench fleet-sim`): hundreds of coding agents as programs, the
coordinator's production dispatcher and policies, the simulator's vLLM V1 engine, one virtual clock.

    scenario.py    scenarios/<name>.toml (package data), validated
    program.py     an agent's task: turns, stages, output lengths, tool times, context growth (from a seed)
    loop.py        the event heap on the virtual clock
    fleet.py       one condition under one seed: agents, dispatchers, engines (routing to a small model,
                   spill-over by the coordinator's own routing decision)
    speculation.py timing models of test pre-runs and streaming tool execution
    prefetch.py    exact LLM prefetch by the coordinator's rules: which answers predict their next request,
                   speculative calls gated, cancelled and served as `coordinator/speculation.py` does
    conditions.py  what is compared (vLLM alone, native priority, pools, priority, the KV-aware policies,
                   speculation, routing at equal GPU count, spill-over)
    bound.py       the physical upper bound of throughput for a scenario's programs
    report.py      figures per run, the table, ratios vs vLLM alone paired by seed
    run.py         a scenario: every condition x seed, plus every agent alone
    command.py     the CLI
"""
